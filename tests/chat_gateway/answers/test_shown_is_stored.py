"""What a client is shown is what is stored, through kills, pauses and drops, with a model that samples.

Each scenario runs against the fake upstream writing the same words every time and writing new ones on every
request (continuations included: text shown and never saved would be written differently), unpaced and at
20 ms a word, with text made durable in the answer log (Redis) and in persistence alone. Every client follows
its stream to the end by the documented protocol (reattach with Last-Event-ID, obey "reattach from N",
resume a response with ``starting_after``) and must hold exactly the stored answer.

The gateways save once a second (the default) and settle a turn within a second, so a gateway killed after
its first words has saved nothing of them the old way, and its answer is picked up long after its turn was
stored: the case crash recovery once ended ``failed`` while its client had been shown text.
"""

import re
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from testing.processes import Service
from testing.upstream import Plan
from tests.chat_gateway.conftest import gateway_env, read_finished, read_message, sse_events, wait_for
from tests.conftest import redis_url_or_skip

pytestmark = pytest.mark.slow

REATTACH = re.compile(r"reattach from (\d+)")


# The upstream's words and pace: the same words paced (as every fault test before), and a sampling model
# unpaced and paced. A test that passes only once the fake is slowed is hiding a race.
WRITES = {"same words, paced": (False, 0.02), "sampled, unpaced": (True, 0.0), "sampled, paced": (True, 0.02)}


@pytest.fixture(params=list(WRITES))
def upstream(request: pytest.FixtureRequest, fake_openai: FastAPI) -> FastAPI:
    fake_openai.state.sample, pace = WRITES[request.param]
    fake_openai.state.default_plan = Plan(delay=pace)
    return fake_openai


@pytest.fixture(scope="module", params=["answer log", "persistence"])
def _gateways(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    persistence: Service,
    _fake_openai_server: tuple[FastAPI, str],
) -> Iterator[tuple[Service, Service]]:
    """Two gateways as deployed (saves once a second), each continuing what the other leaves; text made durable
    in the answer log (Redis), or in persistence alone."""
    durable_in = {"ANSWER_LOG_URL": redis_url_or_skip()} if request.param == "answer log" else {}
    tmp = tmp_path_factory.mktemp("gateways")
    settings = {"FLUSH_INTERVAL_SECONDS": "1", "TURN_SETTLE_SECONDS": "1", **durable_in}
    env = gateway_env(tmp, persistence.url, _fake_openai_server[1], **settings)
    pair = tuple(
        Service.uvicorn("chat_gateway.main:create_app", dict(env), tmp / f"{name}.log").start() for name in "ab"
    )
    yield pair[0], pair[1]
    for gateway in pair:
        gateway.kill(signal.SIGTERM)


@pytest.fixture
def gateways(_gateways: tuple[Service, Service], fake_openai: FastAPI) -> Iterator[tuple[Service, Service]]:
    """Both running at the start of each test: one a test killed is started again after it."""
    yield _gateways
    for gateway in _gateways:
        if gateway.process is not None and gateway.process.poll() is not None:
            gateway.start()


def follow(gateway: Service, message_id: str, seen: str) -> tuple[str, dict[str, Any]]:
    """Follow an answer from what the client holds to its end, as the README says a client does: reattach with
    Last-Event-ID after a break, and from N (dropping what it holds past N) when told to. Returns the text held
    and the last event's data (its kind under ``event``)."""
    for _ in range(20):
        url = f"{gateway.url}/chat/messages/{message_id}/stream"
        try:
            with httpx.stream("GET", url, headers={"last-event-id": str(len(seen))}, timeout=30) as response:
                for event in sse_events(response):
                    if event.event == "delta":
                        seen += event.data["text"]
                    elif event.event == "done":
                        return seen, {"event": "done", **event.data}
                    elif event.event == "error":
                        if (at := REATTACH.search(event.data.get("error") or "")) is not None:
                            seen = seen[: int(at.group(1))]
                            break
                        return seen, {"event": "error", **event.data}
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the answer never ended")


def assert_holds_the_stored_answer(
    process_store: httpx.Client, message_id: str, held: str, last: dict[str, Any]
) -> None:
    stored = read_finished(process_store, message_id)
    assert (last["event"], stored["status"]) == ("done", "complete"), (last, stored["error"])
    assert held == stored["content"]


@pytest.mark.parametrize("deltas", [1, 15])
def test_a_chat_whose_gateway_is_killed_reads_on_elsewhere_as_stored(
    gateways: tuple[Service, Service], process_store: httpx.Client, upstream: FastAPI, deltas: int
) -> None:
    dying, other = gateways
    seen, message_id = "", ""
    with httpx.stream("POST", f"{dying.url}/chat", json={"message": "hi", "stream": True}, timeout=30) as response:
        events = sse_events(response)
        for event in events:
            if event.event == "start":
                message_id = event.data["message_id"]
            elif event.event == "delta":
                seen += event.data["text"]
                assert int(event.id or 0) == len(seen)
                deltas -= 1
                if deltas == 0:
                    dying.kill(signal.SIGKILL)
                    break
            elif event.event == "done":
                break  # unpaced, it may all have come at once
    held, last = follow(other, message_id, seen)
    assert_holds_the_stored_answer(process_store, message_id, held, last)


def test_an_openai_stream_whose_gateway_is_killed_is_reattached_as_stored(
    gateways: tuple[Service, Service], process_store: httpx.Client, upstream: FastAPI
) -> None:
    dying, other = gateways
    client = openai.OpenAI(base_url=f"{dying.url}/v1", api_key="unused", max_retries=0)
    seen, chunk_id = "", ""
    stream = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    for chunk in stream:
        chunk_id = chunk.id
        if chunk.choices and chunk.choices[0].delta.content:
            seen += chunk.choices[0].delta.content
            if len(seen) > 20:
                dying.kill(signal.SIGKILL)
                break
    stream.close()
    held, last = follow(other, chunk_id.removeprefix("chatcmpl-"), seen)
    assert_holds_the_stored_answer(process_store, chunk_id.removeprefix("chatcmpl-"), held, last)


def test_a_background_response_resumed_with_starting_after_holds_what_is_stored(
    gateways: tuple[Service, Service], process_store: httpx.Client, upstream: FastAPI
) -> None:
    """The OpenAI protocol has no way to tell a client to drop text: what it was given must be the answer's."""
    dying, other = gateways
    sdk = openai.OpenAI(base_url=f"{dying.url}/v1", api_key="unused", max_retries=0)
    events: list[Any] = []
    with sdk.responses.create(model="fake-model", input="hi", stream=True, background=True) as stream:
        for event in stream:
            events.append(event)
            if event.type == "response.output_text.delta" and len(events) > 6:
                dying.kill(signal.SIGKILL)
                break
    response_id = events[0].response.id
    for _ in range(20):  # resumed after its last event, through the other gateway, until it ends
        resumed = openai.OpenAI(base_url=f"{other.url}/v1", api_key="unused", max_retries=0)
        try:
            for event in resumed.responses.retrieve(
                response_id, stream=True, starting_after=events[-1].sequence_number
            ):
                events.append(event)
        except (openai.APIConnectionError, httpx.TransportError):
            continue
        if events[-1].type in ("response.completed", "response.failed", "response.incomplete"):
            break
    assert events[-1].type == "response.completed", events[-1]
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(set(numbers))
    held = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    stored = read_finished(process_store, str(uuid.UUID(response_id.removeprefix("resp_"))))
    assert held == stored["content"] == events[-1].response.output_text


def test_a_gateway_paused_past_its_lease_shows_its_client_only_the_stored_answer(
    gateways: tuple[Service, Service], process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    """Paced, so the pause comes mid-answer; sampled, so the other gateway goes on with new words."""
    paused, _ = gateways
    fake_openai.state.sample, fake_openai.state.default_plan = True, Plan(delay=0.05)
    assert paused.process is not None
    seen, message_id = "", ""
    with httpx.stream("POST", f"{paused.url}/chat", json={"message": "hi", "stream": True}, timeout=60) as response:
        events = sse_events(response)
        message_id = next(events).data["message_id"]
        for event in events:
            if event.event == "delta":
                seen += event.data["text"]
                if len(seen) > 20:
                    break
        owner = read_message(process_store, message_id)["lease_owner"]
        paused.process.send_signal(signal.SIGSTOP)
        try:  # the other gateway takes the answer over, and goes on with new words
            wait_for(lambda: read_message(process_store, message_id)["lease_owner"] not in (None, owner))
        finally:
            paused.process.send_signal(signal.SIGCONT)
        last: dict[str, Any] = {"event": "broken"}
        for event in events:
            if event.event == "delta":
                seen += event.data["text"]
            elif event.event in ("done", "error"):
                last = {"event": event.event, **event.data}
                break
    if last["event"] != "done":  # told to reattach (from N, or after a handoff): it does
        if (at := REATTACH.search(last.get("error") or "")) is not None:
            seen = seen[: int(at.group(1))]
        seen, last = follow(paused, message_id, seen)
    assert_holds_the_stored_answer(process_store, message_id, seen, last)


def test_an_upstream_drop_mid_answer_is_continued_as_the_client_was_shown(
    gateways: tuple[Service, Service], process_store: httpx.Client, upstream: FastAPI
) -> None:
    gateway, _ = gateways
    upstream.state.plans.append(Plan(delay=upstream.state.default_plan.delay, drop_after=12))
    seen, message_id, last = "", "", {}
    with httpx.stream("POST", f"{gateway.url}/chat", json={"message": "hi", "stream": True}, timeout=30) as response:
        for event in sse_events(response):
            if event.event == "start":
                message_id = event.data["message_id"]
            elif event.event == "delta":
                seen += event.data["text"]
            else:
                last = {"event": event.event, **event.data}
    assert_holds_the_stored_answer(process_store, message_id, seen, last)
    assert len(upstream.state.requests) == 2
