"""An answer whose upstream fails mid-answer, its retries spent, goes on on the route's next model from its saved
text (issue 39): the stored answer is the first model's part followed by the second's, each client's text is the
stored answer, and the ledger counts each part under its model. Unpaced fakes, deterministic and sampling, on both
databases."""

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from testing.processes import Service
from testing.upstream import Plan
from tests.chat_gateway.conftest import read_finished, sse_events, wait_for
from tests.chat_gateway.upstreams.conftest import Fake, routed_gateway

pytestmark = pytest.mark.slow  # starts processes: left out of `make test-fast`

UPSTREAMS = """
[[upstreams]]
name = "a"
base_url = "{a}"
models = ["alpha", "tools"]
continuation = "exact"
failure_threshold = 1000  # its streams break off in every test: never skipped for it

[[upstreams]]
name = "flaky"
base_url = "{a}"
models = ["fragile"]
continuation = "exact"
failure_threshold = 1
cooldown_seconds = 1

[[upstreams]]
name = "lonely"
base_url = "{a}"
models = ["solo"]
continuation = "exact"
failure_threshold = 2
cooldown_seconds = 2

[[upstreams]]
name = "c"
base_url = "{c}"
models = ["gamma"]
continuation = "exact"

[fallbacks]
alpha = ["gamma"]
tools = ["gamma"]
fragile = ["gamma"]
"""
ATTEMPTS = 2  # RETRY_ATTEMPTS: a's two attempts each break off, then c goes on
BROKEN = [Plan(drop_after=3), Plan(drop_after=3)]
QUESTION = "Where is Lyon?"


@pytest.fixture(scope="module")
def persistence(persistence_on_both: Service) -> Service:
    return persistence_on_both


@pytest.fixture(scope="module")
def midanswer(tmp_path_factory: pytest.TempPathFactory, persistence: Service, _fakes: list[Fake]) -> Iterator[Service]:
    a, _, c = _fakes
    tmp, upstreams = tmp_path_factory.mktemp("midanswer"), UPSTREAMS.format(a=a.url, c=c.url)
    with routed_gateway(tmp, persistence, upstreams, RETRY_ATTEMPTS=str(ATTEMPTS)) as service:
        yield service


@pytest.fixture(params=[False, True], ids=["deterministic", "sampling"])
def gateway(request: pytest.FixtureRequest, midanswer: Service, fakes: list[Fake]) -> Service:
    for fake in fakes:
        fake.app.state.sample = request.param
    return midanswer


def _broken(fakes: list[Fake], name: str) -> str:
    """a's attempts scripted to break off mid-answer, and a user of the test's own (its ledger alone)."""
    fakes[0].app.state.plans.extend(BROKEN)
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _sent(fake: Fake) -> str:
    return "".join(exchange.sent for exchange in fake.app.state.exchanges)


def _check_stored(store: httpx.Client, message_id: str, fakes: list[Fake], user: str) -> dict[str, Any]:
    """The stored answer is a's part (what its attempts sent) then c's, its parts say so, the ledger splits it."""
    a, _, c = fakes
    stored = read_finished(store, message_id)
    assert stored["status"] == "complete", stored
    boundary = len(_sent(a))
    assert [(part["model"], part["offset"]) for part in stored["answer_parts"]] == [("alpha", 0), ("gamma", boundary)]
    content = stored["content"]
    assert (content[:boundary], content[boundary:]) == (_sent(a), _sent(c))
    assert len(c.app.state.exchanges) == 1
    assert c.app.state.exchanges[0].partial == _sent(a)  # c went on from the saved text
    report = store.get("/usage", params={"user_id": user}).json()
    rows = report["rows"]
    by_model = {row["model"]: row for row in rows}
    assert set(by_model) == {"alpha", "gamma"}
    assert by_model["gamma"]["completion_tokens"] == c.app.state.exchanges[0].tokens  # its upstream's figures
    assert by_model["alpha"]["estimated_tokens"] > 0  # a's broken streams said nothing: estimated from its text
    assert [row["answers"] for row in rows] == [1, 1]  # the answer, in each model's row
    assert report["total_tokens"] == sum(row["total_tokens"] for row in rows)  # its tokens counted once
    return stored


def _chat_sse(gateway: Service, user: str) -> tuple[str, str, list[dict[str, Any]]]:
    body = {"message": QUESTION, "stream": True, "user_id": user}
    with httpx.stream("POST", f"{gateway.url}/chat", json=body, timeout=30) as response:
        events = list(sse_events(response))
    deltas = [event.data for event in events if event.event == "delta"]
    assert events[-1].event == "done", events[-1]
    return events[0].data["message_id"], "".join(delta["text"] for delta in deltas), deltas


def test_sse_says_when_the_model_changed_and_shows_the_stored_answer(
    gateway: Service, fakes: list[Fake], store: httpx.Client
) -> None:
    user = _broken(fakes, "sse")
    message_id, text, deltas = _chat_sse(gateway, user)
    stored = _check_stored(store, message_id, fakes, user)
    assert text == stored["content"]
    named = [(index, delta) for index, delta in enumerate(deltas) if "model" in delta]
    assert [delta["model"] for _, delta in named] == ["gamma"]
    before = "".join(delta["text"] for delta in deltas[: named[0][0]])
    assert before == stored["content"][: stored["answer_parts"][1]["offset"]]  # the first delta of gamma's part


def test_a_client_following_the_stored_answer_is_told_each_parts_model(
    gateway: Service, fakes: list[Fake], store: httpx.Client
) -> None:
    """Reattached once the answer ended, the client follows it through persistence, not the generation that wrote
    it: its deltas are cut at the stored boundary, and the first of gamma's part names gamma, as a live one does."""
    user = _broken(fakes, "follower")
    message_id, _, _ = _chat_sse(gateway, user)
    stored = _check_stored(store, message_id, fakes, user)
    boundary = stored["answer_parts"][1]["offset"]
    for offset in (0, 1):
        url = f"{gateway.url}/chat/messages/{message_id}/stream"
        with httpx.stream("GET", url, params={"offset": offset}, timeout=30) as response:
            deltas = [event.data for event in sse_events(response) if event.event == "delta"]
        assert "".join(delta["text"] for delta in deltas) == stored["content"][offset:]
        named = [index for index, delta in enumerate(deltas) if "model" in delta]
        assert [deltas[index]["model"] for index in named] == ["gamma"]
        assert len("".join(delta["text"] for delta in deltas[: named[0]])) == boundary - offset


def test_json_answer_carries_its_parts(gateway: Service, fakes: list[Fake], store: httpx.Client) -> None:
    user = _broken(fakes, "json")
    response = httpx.post(f"{gateway.url}/chat", json={"message": QUESTION, "user_id": user}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    stored = _check_stored(store, body["message_id"], fakes, user)
    assert body["response"] == stored["content"]
    assert body["answer_parts"] == stored["answer_parts"]


def _completion(gateway: Service, user: str, stream: bool, model: str = "alpha") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "user": user, "stream": stream}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)


def test_chat_completions_chunks_name_the_model_that_wrote_them(
    gateway: Service, fakes: list[Fake], store: httpx.Client
) -> None:
    user = _broken(fakes, "cc")
    response = _completion(gateway, user, stream=True)
    lines = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: {")]
    chunks = [json.loads(line) for line in lines]
    texts = [(chunk["model"], chunk["choices"][0]["delta"].get("content") or "") for chunk in chunks[:-1]]
    stored = _check_stored(store, chunks[0]["id"].removeprefix("chatcmpl-"), fakes, user)
    assert "".join(text for _, text in texts) == stored["content"]
    boundary = stored["answer_parts"][1]["offset"]
    assert "".join(text for model, text in texts if model == "alpha") == stored["content"][:boundary]
    assert "".join(text for model, text in texts if model == "gamma") == stored["content"][boundary:]


def test_a_whole_chat_completion_names_the_first_model_and_its_parts(
    gateway: Service, fakes: list[Fake], store: httpx.Client
) -> None:
    user = _broken(fakes, "whole")
    response = _completion(gateway, user, stream=False)
    assert response.status_code == 200, response.text
    body = response.json()
    stored = _check_stored(store, body["id"].removeprefix("chatcmpl-"), fakes, user)
    assert body["model"] == "alpha"
    assert body["choices"][0]["message"]["content"] == stored["content"]
    assert body["answer_parts"] == [{"model": m["model"], "offset": m["offset"]} for m in stored["answer_parts"]]


def test_a_background_response_has_its_parts_in_its_metadata(
    gateway: Service, fakes: list[Fake], store: httpx.Client
) -> None:
    user = _broken(fakes, "bg")
    body = {"model": "alpha", "input": QUESTION, "background": True, "user": user, "metadata": {"mine": "kept"}}
    created = httpx.post(f"{gateway.url}/v1/responses", json=body, timeout=30)
    assert created.status_code == 200, created.text
    response_id = created.json()["id"]

    def ended() -> Any:
        got = httpx.get(f"{gateway.url}/v1/responses/{response_id}", timeout=30).json()
        return got["status"] not in ("queued", "in_progress") and got

    final = wait_for(ended)
    stored = _check_stored(store, str(uuid.UUID(hex=response_id.removeprefix("resp_"))), fakes, user)
    assert final["output"][0]["content"][0]["text"] == stored["content"]
    boundary = stored["answer_parts"][1]["offset"]
    assert final["metadata"] == {"mine": "kept", "answer_parts": f'[["alpha",0],["gamma",{boundary}]]'}


def test_a_tool_call_cut_off_is_asked_again_whole_on_the_next_model(
    gateway: Service, fakes: list[Fake], store: httpx.Client
) -> None:
    """a sends its text and breaks off inside the call, twice; c goes on from the text and makes the call whole."""
    a, _, c = fakes
    words = len(str(a.app.state.text).split())
    call = [("lookup", '{"city": "Lyon"}')]
    # The first attempt breaks off in the call after the text; the second (the call alone) at once.
    a.app.state.plans.extend([Plan(drop_after=words + 1, tool_calls=call), Plan(drop_after=1, tool_calls=call)])
    c.app.state.plans.append(Plan(tool_calls=call, call_id="call_c"))
    user = f"tools-{uuid.uuid4().hex[:8]}"
    body = {"model": "tools", "messages": [{"role": "user", "content": QUESTION}], "user": user}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    assert [(tool["id"], tool["function"]["arguments"]) for tool in message["tool_calls"]] == [
        ("call_c", '{"city": "Lyon"}')
    ]
    stored = read_finished(store, response.json()["id"].removeprefix("chatcmpl-"))
    assert [(part["model"], part["offset"]) for part in stored["answer_parts"]] == [
        ("tools", 0),
        ("gamma", len(_sent(a))),
    ]
    assert stored["content"] == _sent(a) + _sent(c) == message["content"]
    assert [tool["id"] for tool in stored["tool_calls"]] == ["call_c"]


def _state(gateway: Service, name: str = "flaky") -> str:
    upstreams = httpx.get(f"{gateway.url}/health/ready", timeout=30).json()["upstreams"]
    state: str = next(upstream["state"] for upstream in upstreams if upstream["name"] == name)
    return state


def test_a_breaker_opened_mid_answer_sends_the_rest_on_and_closes_after_a_probe(
    gateway: Service, fakes: list[Fake], store: httpx.Client
) -> None:
    """flaky's stream breaks off and opens its breaker (threshold 1): the answer's next attempt passes it over and
    goes on on c; the next chat goes to c at once; after the cool-down a probe succeeds and closes it."""
    a, _, c = fakes
    a.app.state.plans.append(Plan(drop_after=3))
    first = _completion(gateway, "breaker", stream=False, model="fragile")
    assert first.status_code == 200, first.text
    stored = read_finished(store, first.json()["id"].removeprefix("chatcmpl-"))
    assert [(part["model"], part["offset"]) for part in stored["answer_parts"]] == [
        ("fragile", 0),
        ("gamma", len(_sent(a))),
    ]
    assert stored["content"] == _sent(a) + _sent(c) == first.json()["choices"][0]["message"]["content"]
    assert _state(gateway) == "open"
    skipped = _completion(gateway, "breaker", stream=False, model="fragile").json()
    assert "answer_parts" not in skipped
    assert len(a.app.state.exchanges) == 1  # c alone answered it
    time.sleep(1.1)  # the cool-down
    probed = _completion(gateway, "breaker", stream=False, model="fragile").json()
    assert "answer_parts" not in probed
    assert len(a.app.state.exchanges) == 2  # the probe, answered whole
    assert _state(gateway) == "closed"


def test_an_answer_whose_every_upstream_cools_down_waits_for_the_probe_and_a_new_chat_is_refused(
    gateway: Service, fakes: list[Fake], store: httpx.Client
) -> None:
    """lonely's stream breaks off mid-answer, its retry fails too and opens its breaker (threshold 2), and solo has
    no fallback: its retries spent, the answer waits for the probe and finishes on it; meanwhile a new chat of solo is
    refused at once, 503 with Retry-After."""
    a = fakes[0]
    a.app.state.plans.extend([Plan(drop_after=3), Plan(status=503)])
    user = f"cool-{uuid.uuid4().hex[:8]}"
    body = {"message": QUESTION, "stream": True, "model": "solo", "user_id": user}
    with httpx.stream("POST", f"{gateway.url}/chat", json=body, timeout=30) as response:
        events = sse_events(response)
        message_id = next(events).data["message_id"]
        wait_for(lambda: _state(gateway, "lonely") == "open")
        refused = _completion(gateway, user, stream=False, model="solo")
        rest = list(events)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "upstream_cooling_down"
    assert refused.headers["retry-after"] in ("1", "2")
    assert rest[-1].event == "done", rest[-1]
    stored = read_finished(store, message_id)
    assert stored["status"] == "complete"
    assert "".join(event.data["text"] for event in rest if event.event == "delta") == stored["content"] == _sent(a)
    assert (stored["model"], "answer_parts" in stored) == ("solo", False)
    assert len(a.app.state.exchanges) == 3  # the broken stream, its retry, then the probe that continued it
    assert a.app.state.exchanges[2].partial == a.app.state.exchanges[0].sent
    assert _state(gateway, "lonely") == "closed"


def test_an_answer_every_model_broke_off_resumes_on_its_last_parts_model(
    gateway: Service, fakes: list[Fake], store: httpx.Client
) -> None:
    """a's retries spent, then c's: it fails with both parts; resumed, it goes on on gamma (its last part's model),
    and this run's tokens are gamma's alone."""
    a, _, c = fakes
    user = _broken(fakes, "resume")
    c.app.state.plans.extend(BROKEN)
    failed = httpx.post(f"{gateway.url}/chat", json={"message": QUESTION, "user_id": user}, timeout=30)
    assert failed.status_code == 502, failed.text
    message_id = failed.json()["message_id"]
    stored = read_finished(store, message_id)
    boundary = len(_sent(a))
    assert stored["status"] == "failed"
    assert [(part["model"], part["offset"]) for part in stored["answer_parts"]] == [("alpha", 0), ("gamma", boundary)]
    assert stored["content"] == _sent(a) + _sent(c)
    before = {row["model"]: row["total_tokens"] for row in store.get("/usage", params={"user_id": user}).json()["rows"]}
    resumed = httpx.post(f"{gateway.url}/chat/messages/{message_id}/resume", timeout=30)
    assert resumed.status_code == 200, resumed.text
    final = read_finished(store, message_id)
    assert final["status"] == "complete"
    assert final["model"] == stored["model"]  # its first part's, as the first run stored it
    assert len(a.app.state.exchanges) == ATTEMPTS  # a was not asked again: gamma's route went on
    assert final["content"] == _sent(a) + _sent(c) == resumed.json()["response"]
    assert [(part["model"], part["offset"]) for part in final["answer_parts"]] == [("alpha", 0), ("gamma", boundary)]
    after = {row["model"]: row["total_tokens"] for row in store.get("/usage", params={"user_id": user}).json()["rows"]}
    assert after["alpha"] == before["alpha"]  # nothing more under alpha
    assert after["gamma"] > before["gamma"]


def test_a_streamed_response_names_the_new_model_on_its_first_delta(
    gateway: Service, fakes: list[Fake], store: httpx.Client
) -> None:
    user = _broken(fakes, "streamed")
    body = {"model": "alpha", "input": QUESTION, "stream": True, "user": user}
    with httpx.stream("POST", f"{gateway.url}/v1/responses", json=body, timeout=30) as response:
        events = [event.data for event in sse_events(response)]
    deltas = [event for event in events if event["type"] == "response.output_text.delta"]
    completed = events[-1]["response"]
    stored = _check_stored(store, str(uuid.UUID(hex=completed["id"].removeprefix("resp_"))), fakes, user)
    assert "".join(delta["delta"] for delta in deltas) == stored["content"]
    assert [delta["model"] for delta in deltas if "model" in delta] == ["gamma"]
    named = next(index for index, delta in enumerate(deltas) if "model" in delta)
    boundary = stored["answer_parts"][1]["offset"]
    assert len("".join(delta["delta"] for delta in deltas[:named])) <= boundary  # gamma's text begins in it
    assert len("".join(delta["delta"] for delta in deltas[: named + 1])) > boundary
    assert completed["model"] == "alpha"
    assert completed["metadata"] == {"answer_parts": f'[["alpha",0],["gamma",{boundary}]]'}
