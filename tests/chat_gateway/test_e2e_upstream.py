"""End to end, what the upstream does: drops, restarts, errors, options, names; the stored answer asserted exactly."""

import contextlib
import math
import random
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI

from testing.chunks import tokens
from testing.upstream import MODEL, TEXT, Plan
from tests.chat_gateway.conftest import (
    LocalService,
    local_gateway,
    read_finished,
    read_message,
    wait_for,
)


def test_upstream_drop_is_continued_without_repeating_text(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    drop_at = random.randint(1, len(tokens(TEXT)) - 8)
    fake_openai.state.plans.extend([Plan(drop_after=drop_at), Plan(drop_after=3)])  # dropped twice
    body = httpx.post(f"{gateway.url}/chat", json={"message": "hi"}, timeout=30).json()
    assert body["response"] == TEXT
    assert read_message(store, body["message_id"])["content"] == TEXT
    requests = fake_openai.state.requests
    assert len(requests) == 3, (drop_at, [r["messages"][-1] for r in requests])
    partial = requests[2]["messages"][-1]
    assert partial["role"] == "assistant"
    assert TEXT.startswith(partial["content"])
    assert partial["content"]
    assert requests[2]["messages"][:-1] == requests[0]["messages"]  # asked as the answer was, nothing added


TABLE = "| city | river |\n|---|---|\n" + "| Lyon | Rhone |\n" * 6


@pytest.mark.parametrize("drop_after", [1, 5, 14, 20])
def test_an_answer_of_identical_rows_survives_a_drop_whole_with_an_exact_upstream(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI, drop_after: int
) -> None:
    """Unpaced: the join cuts nothing, so a repeated row is never taken for a repeat of the upstream's."""
    fake_openai.state.text = TABLE
    fake_openai.state.plans.append(Plan(drop_after=drop_after))
    body = httpx.post(f"{gateway.url}/chat", json={"message": "a table"}, timeout=30).json()
    assert (body["status"], body["response"]) == ("complete", TABLE)
    assert read_message(store, body["message_id"])["content"] == TABLE
    assert len(fake_openai.state.requests) == 2


@pytest.mark.parametrize(("text", "brackets"), [(TEXT, False), (TABLE, False), (TEXT, True)])
def test_a_restarting_upstream_repeats_the_words_it_is_asked_for_and_only_they_are_cut(
    tmp_path: Path,
    persistence_app: LocalService,
    store: httpx.Client,
    fake_openai: FastAPI,
    fake_openai_url: str,
    text: str,
    brackets: bool,
) -> None:
    """``brackets``: the model repeats them too, "[[...]]" (issue 37): the repeat goes with them."""
    fake_openai.state.text = text
    restart = Plan(restart=True, echo_brackets=brackets)
    fake_openai.state.plans.extend([Plan(drop_after=9), replace(restart, drop_after=4), restart])
    settings = {"UPSTREAM_CONTINUATION": "restart"}
    with local_gateway(tmp_path, persistence_app, fake_openai_url, **settings) as restarting:
        body = httpx.post(f"{restarting.url}/chat", json={"message": "hi"}, timeout=30).json()
    assert body["response"] == text
    assert read_message(store, body["message_id"])["content"] == text
    instruction = str(fake_openai.state.requests[1]["messages"][-2]["content"])
    assert "[[" in instruction


def test_a_vllm_upstream_is_known_at_start_up_and_continues_the_answer_with_its_flags(
    tmp_path: Path,
    persistence_app: LocalService,
    store: httpx.Client,
    fake_openai: FastAPI,
    fake_openai_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Asked without continue_final_message, the fake vLLM (as vLLM does) starts a new answer after the cut text:
    only the flags the gateway chose at start-up, from /version and its models, make the join whole."""
    fake_openai.state.server, fake_openai.state.models = "vllm", [MODEL]
    fake_openai.state.plans.extend([Plan(drop_after=9), Plan(drop_after=4)])
    with local_gateway(tmp_path, persistence_app, fake_openai_url) as vllm:  # UPSTREAM_CONTINUATION: auto
        body = httpx.post(f"{vllm.url}/chat", json={"message": "hi"}, timeout=30).json()
    assert (body["status"], body["response"]) == ("complete", TEXT)
    assert read_message(store, body["message_id"])["content"] == TEXT
    first, *continued = fake_openai.state.requests
    assert "continue_final_message" not in first
    assert len(continued) == 2
    for request in continued:
        assert (request["continue_final_message"], request["add_generation_prompt"]) == (True, False)
        assert request["messages"][-1]["role"] == "assistant"
    said = [record.getMessage() for record in caplog.records]
    assert said.count("upstream default continuation vllm: vLLM 0.0.0-fake at /version") == 1


def test_rate_limit_with_retry_after_is_retried(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.extend([Plan(status=429, retry_after="1"), Plan(status=503)])
    body = httpx.post(f"{gateway.url}/chat", json={"message": "hi"}, timeout=30).json()
    assert body["response"] == TEXT
    assert len(fake_openai.state.requests) == 3


def test_client_error_is_not_retried_and_fails_the_answer(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(status=400))
    response = httpx.post(f"{gateway.url}/chat", json={"message": "hi"}, timeout=30)
    assert response.status_code == 502
    body = response.json()
    assert (body["code"], body["partial"]) == ("answer_failed", "")
    assert "400" in body["error"]
    assert len(fake_openai.state.requests) == 1
    assert read_message(store, body["message_id"])["status"] == "failed"


def test_an_upstream_error_message_with_a_nul_is_stored_with_the_partial_answer(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """The error is stored as text can be (U+FFFD), not refused, which lost the partial answer with it."""
    fake_openai.state.plans.extend([Plan(drop_after=6), Plan(status=401, message="bad\x00key")])
    failed = httpx.post(f"{gateway.url}/chat", json={"message": "hi"}, timeout=30).json()
    stored = read_message(store, failed["message_id"])
    assert (stored["status"], stored["content"]) == ("failed", "".join(tokens(TEXT)[:6]))
    assert "bad\ufffdkey" in stored["error"]


def test_without_upstream_key_chat_is_503_with_how_to(tmp_path: Path, persistence_app: LocalService) -> None:
    with local_gateway(tmp_path, persistence_app, None) as service:
        response = httpx.post(f"{service.url}/chat", json={"message": "hi"}, timeout=30)
        assert response.status_code == 503
        assert "OPENAI_API_KEY" in response.json()["detail"]
        assert httpx.get(f"{service.url}/health/ready").status_code == 200


@contextmanager
def _hanging_up_server(after: float) -> Iterator[str]:
    """A server that takes every connection and closes it ``after`` seconds later without answering."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                connection, _ = listener.accept()
                threading.Timer(after, connection.close).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def test_an_openai_call_is_sent_upstream_while_its_turn_is_stored_and_dropped_if_storing_fails(
    tmp_path: Path, fake_openai: FastAPI, fake_openai_url: str
) -> None:
    """Persistence hangs up on every request: the turn cannot be stored, so no answer may be given."""
    fake, upstream = fake_openai, fake_openai_url
    fake.state.plans.append(Plan(delay=0.05))  # a long answer: still streaming when dropped
    body = {"model": "fake-model", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with _hanging_up_server(after=0.3) as broken:
        settings = {"API_BASE_URL": broken, "PERSISTENCE_RETRY_ATTEMPTS": "2", "TURN_SETTLE_SECONDS": "1"}
        with local_gateway(tmp_path, None, upstream, **settings) as service:
            response = httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=30)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "persistence_unavailable"
            assert len(fake.state.requests) == 1  # sent at once, not after the turn was stored
            wait_for(lambda: fake.state.open_streams == 0)  # and abandoned
            # With an Idempotency-Key the turn may be a retry of a stored one: nothing goes out before it is known.
            headers = {"Idempotency-Key": "k1"}
            retry = httpx.post(f"{service.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
            assert retry.status_code == 503
            assert len(fake.state.requests) == 1


def test_lease_is_renewed_while_the_upstream_is_silent(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(stall=4.0))  # far longer than the 1.5 s lease
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{gateway.url}/chat", json={"message": "hi"}, timeout=30)
        answer_id = wait_for(lambda: _in_progress(store))
        for _ in range(15):
            assert answer_id not in {m["id"] for m in store.get("/messages/stale").json()}
            threading.Event().wait(0.2)
        body = pending.result().json()
    final = read_message(store, body["message_id"])
    assert (final["content"], final["attempts"]) == (TEXT, 1)
    assert len(fake_openai.state.requests) == 1


def _in_progress(store: httpx.Client) -> str | None:
    sessions = store.get("/sessions", params={"limit": 1}).json()["items"]
    if not sessions:
        return None
    last = store.get(f"/sessions/{sessions[0]['id']}/messages/last", params={"role": "assistant"})
    if last.status_code != 200 or last.json()["status"] != "in_progress":
        return None
    message_id: str = last.json()["id"]
    return message_id


def test_generation_options_reach_the_model_and_hold_for_the_whole_answer(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(drop_after=10))  # then continued, with what is left of max_tokens
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="any", max_retries=0)
    options = {"temperature": 0.1, "max_tokens": 20, "stop": ["\n\n"], "seed": 7}
    completion = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "hi"}],
        store=True,
        temperature=0.1,
        max_tokens=20,
        stop=["\n\n"],
        seed=7,
    )
    first, continued = fake_openai.state.requests
    assert {key: first.get(key) for key in [*options, "store"]} == options | {"store": None}
    partial = continued["messages"][-1]["content"]
    assert partial == "".join(tokens(TEXT)[:10])
    assert continued["max_tokens"] == 20 - math.ceil(len(partial) / 4)
    assert {key: continued[key] for key in ("temperature", "stop", "seed")} == {
        "temperature": 0.1,
        "stop": ["\n\n"],
        "seed": 7,
    }
    answer_text = "".join(tokens(TEXT)[: 10 + continued["max_tokens"]])
    assert (completion.choices[0].message.content, completion.choices[0].finish_reason) == (answer_text, "length")
    stored = read_message(store, completion.id.removeprefix("chatcmpl-"))
    assert (stored["content"], stored["finish_reason"], stored["options"]) == (answer_text, "length", options)


def test_openai_errors_come_back_in_openai_shape(gateway: LocalService, fake_openai: FastAPI) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="any", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "assistant", "content": "prefill"}])
    assert info.value.status_code == 400
    assert "last message must be a user message" in info.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[])
    fake_openai.state.plans.append(Plan(status=401))
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 502
    assert isinstance(failed.value.body, dict)
    assert failed.value.body["type"] == "api_error"


def test_a_nul_from_the_model_is_stored_as_u_fffd_not_refused_for_ever(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """It was: every save refused, the answer left in progress, and crash recovery paying to generate it again."""
    fake_openai.state.text = "Hello \x00 world \U0001f600 again."
    reply = httpx.post(f"{gateway.url}/chat", json={"message": "hi"}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json()["response"] == "Hello \ufffd world \U0001f600 again."
    stored = read_finished(store, reply.json()["message_id"])
    assert (stored["status"], stored["content"]) == ("complete", "Hello \ufffd world \U0001f600 again.")


def test_an_answer_is_stored_under_the_model_asked_whatever_name_its_upstream_reports(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """Not under the upstream's own name (here too long to store, even): the one the model is asked by (README,
    "Upstreams and fallbacks")."""
    fake_openai.state.chunks = replace(fake_openai.state.chunks, model="m" * 300)
    reply = httpx.post(f"{gateway.url}/chat", json={"message": "hi"}, timeout=30)
    assert reply.status_code == 200, reply.text
    stored = read_finished(store, reply.json()["message_id"])
    assert (stored["status"], stored["content"], stored["model"]) == ("complete", TEXT, "fake-model")
