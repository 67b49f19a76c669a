"""The real local model continues an interrupted answer as it would have gone on (`make test-local-llm`).

Gemma 3 270M at temperature 0 (greedy: each token is the likeliest, so an answer is determined by its prompt)
answers a question once uninterrupted; then the same answer, interrupted at many offsets, is continued, sent
back as the last assistant message, directly to the model server and through the gateway with the model
server or the gateway killed mid-answer. Continued from where a token ends, it must equal the uninterrupted
answer. From inside a token it may not: the text so far is tokenized again and ends in a shorter token than
the one the model wrote, a path greedy decoding would not have taken, so the test counts those and prints
them (docs/reliability.md has the figures).

It needs llama-cpp-python built with the model (`make test-local-llm` builds both and opts in by setting
LOCAL_LLM_MODEL and LOCAL_LLM_PYTHON); without them it is skipped, under CI=true too: `make test` never runs it.
"""

import json
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from testing.ports import free_port
from testing.processes import Service
from tests.chat_gateway.answers.test_shown_is_stored import follow
from tests.chat_gateway.conftest import PERSISTENCE_KEY, gateway_env, persistence_on, read_finished, sse_events

MODEL = os.environ.get("LOCAL_LLM_MODEL", "")
PYTHON = os.environ.get("LOCAL_LLM_PYTHON", "")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MODEL and PYTHON), reason="the local model: `make test-local-llm` builds and runs it"),
]

QUESTION = "Explain in three short paragraphs why the sky is blue."
# This model (Gemma 3 270M, pretrained, not instruction-tuned) never ends its turn: it writes a paragraph, then
# the question again and the same paragraph, in a loop. The answer stops where the loop comes back, of itself
# (finish_reason "stop"), so no token limit, which the gateway estimates from the text, decides where it ends.
OPTIONS: dict[str, Any] = {"temperature": 0, "max_tokens": 400, "stop": ["\nExplain"]}


def model_server_process(log: Path) -> Service:
    """`make local-llm`'s server (scripts/local_llm.py) on a port of its own."""
    port = free_port()
    command = [PYTHON, str(ROOT / "scripts/local_llm.py"), "--model", MODEL, "--chat_format", "gemma-continue"]
    command += ["--model_alias", "gemma3-270m", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--n_batch", "1", "--n_ubatch", "1"]  # as `make local-llm` serves it (the Makefile says why)
    return Service(command, port, log=log, name="the model server", ready="/v1/models", timeout=120)


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    server = model_server_process(tmp_path_factory.mktemp("llm") / "llm.log").start()
    yield server
    server.kill(signal.SIGTERM)


def stream_completion(server: Service, messages: list[dict[str, str]]) -> tuple[list[str], str]:
    """The model's reply, streamed: its text in the pieces it came in (one token each, as llama.cpp streams),
    and why it ended."""
    body = {"model": "gemma3-270m", "messages": messages, "stream": True, **OPTIONS}
    pieces, finish = [], ""
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=300) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            choice = json.loads(line[5:])["choices"][0]
            if text := choice["delta"].get("content"):
                pieces.append(text)
            finish = choice.get("finish_reason") or finish
    return pieces, finish


@dataclass
class Cut:
    offset: int
    inside_token: bool
    continued: str

    def diverges_at(self, answer: str) -> int | None:
        """Where the continued answer first differs from the uninterrupted one (None where it equals it)."""
        if self.continued == answer:
            return None
        return next((i for i, (a, b) in enumerate(zip(self.continued, answer, strict=False)) if a != b), None) or min(
            len(self.continued), len(answer)
        )


def offsets(pieces: list[str], count: int) -> list[tuple[int, bool]]:
    """About ``count`` cuts spread over the answer, half where a streamed piece (a token) ends, half in the
    middle of one of at least two characters (a word cut, or the space before it kept without the word)."""
    ends, inside, at = [], [], 0
    for piece in pieces[:-1]:
        if len(piece) >= 2:
            inside.append(at + len(piece) // 2)
        at += len(piece)
        ends.append(at)

    def spread(values: list[int], n: int) -> list[int]:
        return sorted({values[i * (len(values) - 1) // max(n - 1, 1)] for i in range(n)}) if values else []

    half = count // 2
    return sorted([(o, False) for o in spread(ends, half)] + [(o, True) for o in spread(inside, count - half)])


def report(title: str, answer: str, cuts: list[Cut]) -> None:
    print(f"\n{title}: the uninterrupted answer has {len(answer)} characters")
    for cut in cuts:
        where = cut.diverges_at(answer)
        verdict = "equal" if where is None else f"differs from {where}: {cut.continued[where : where + 40]!r}"
        kind = "inside a token" if cut.inside_token else "at a token's end"
        print(f"  cut at {cut.offset:4} ({kind}, {answer[max(cut.offset - 12, 0) : cut.offset]!r}|): {verdict}")
    for inside in (False, True):
        some = [c for c in cuts if c.inside_token == inside]
        equal = sum(c.continued == answer for c in some)
        print(f"  {'inside a token' if inside else 'at a token end'}: {equal} of {len(some)} equal")


def test_an_answer_cut_anywhere_and_sent_back_is_continued_as_it_would_have_gone_on(
    model_server: Service,
) -> None:
    question = [{"role": "user", "content": QUESTION}]
    pieces, finish = stream_completion(model_server, question)
    answer = "".join(pieces)
    assert finish == "stop", "the answer must end of itself, or a continuation's token limit would differ"
    assert len(pieces) > 40, answer
    cuts = []
    for offset, inside_token in offsets(pieces, 24):
        partial = [*question, {"role": "assistant", "content": answer[:offset]}]
        rest, finish = stream_completion(model_server, partial)
        cuts.append(Cut(offset, inside_token, answer[:offset] + "".join(rest)))
    report("Continued directly", answer, cuts)
    # Where a token ends, the prompt is the uninterrupted one's, token for token: greedy decoding goes on alike.
    assert all(cut.continued == answer for cut in cuts if not cut.inside_token)


@pytest.fixture(scope="module")
def persistence(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with persistence_on(tmp_path_factory.mktemp("persistence"), "sqlite") as service:
        yield service


@pytest.fixture
def store(persistence: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=persistence.url, headers={"x-api-key": PERSISTENCE_KEY}, timeout=30) as client:
        yield client


@pytest.fixture
def gateway(tmp_path: Path, persistence: Service, model_server: Service) -> Iterator[Service]:
    """A gateway in front of the model, which it continues as `exact` (the text itself), retrying for long
    enough to see the model server started again."""
    retries = {"RETRY_ATTEMPTS": "20", "RETRY_INITIAL_WAIT": "0.5", "RETRY_MAX_WAIT": "1", "RETRY_MAX_SECONDS": "300"}
    env = gateway_env(tmp_path, persistence.url, model_server.url, **retries)
    env |= {"OPENAI_MODEL": "gemma3-270m", "UPSTREAM_CONTINUATION": "exact", "INSTANCE_ID": f"llm-{uuid.uuid4()}"}
    service = Service.uvicorn("chat_gateway.main:create_app", env, tmp_path / "gateway.log").start()
    yield service
    service.kill(signal.SIGTERM)


def chat_until(gateway: Service, chars: int | None) -> tuple[str, str, Iterator[Any], httpx.Response]:
    """A streamed chat, read until ``chars`` characters have arrived (None: to its end). Returns the answer's
    id, the text so far, the rest of the events and the response to close."""
    body = {"message": QUESTION, "stream": True, "options": OPTIONS}
    client = httpx.Client(timeout=300)
    response = client.send(client.build_request("POST", f"{gateway.url}/chat", json=body), stream=True)
    events = sse_events(response)
    message_id, seen = "", ""
    for event in events:
        if event.event == "start":
            message_id = event.data["message_id"]
        elif event.event == "delta":
            seen += event.data["text"]
            if chars is not None and len(seen) >= chars:
                break
        elif event.event in ("done", "error"):
            assert event.event == "done", event.data
            break
    return message_id, seen, events, response


KILL_AFTER = (30, 120, 250)  # characters shown: the first words, a sentence or so, well into the answer


def test_through_the_gateway_with_the_model_server_killed_mid_answer(
    gateway: Service, store: httpx.Client, model_server: Service
) -> None:
    message_id, answer, _, response = chat_until(gateway, None)
    response.close()
    assert read_finished(store, message_id)["content"] == answer
    results = []
    for chars in KILL_AFTER:
        message_id, seen, events, response = chat_until(gateway, chars)
        model_server.kill()
        model_server.start()
        for event in events:
            if event.event == "delta":
                seen += event.data["text"]
            elif event.event in ("done", "error"):
                assert event.event == "done", event.data
                break
        response.close()
        stored = read_finished(store, message_id)
        results.append(Cut(chars, False, stored["content"]))
        assert seen == stored["content"]
    report("Through the gateway, model server killed", answer, results)
    assert all(cut.continued == answer for cut in results)


def test_through_the_gateway_killed_mid_answer(gateway: Service, store: httpx.Client) -> None:
    message_id, answer, _, response = chat_until(gateway, None)
    response.close()
    results = []
    for chars in KILL_AFTER:
        message_id, seen, _, response = chat_until(gateway, chars)
        gateway.kill()
        response.close()
        gateway.start()  # under its own INSTANCE_ID: it takes its answer back at start-up
        held, last = follow(gateway, message_id, seen)
        stored = read_finished(store, message_id)
        assert (last["event"], held) == ("done", stored["content"])
        results.append(Cut(chars, False, stored["content"]))
    report("Through the gateway, gateway killed", answer, results)
    assert all(cut.continued == answer for cut in results)
