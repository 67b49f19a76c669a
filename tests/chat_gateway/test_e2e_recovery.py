"""End to end, gateways and persistence that die, stop or pause, and clients that reattach through another gateway:
the stored answer asserted exactly."""

import itertools
import json
import re
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from testing.processes import Service
from testing.upstream import TEXT, Plan
from tests.chat_gateway.conftest import (
    LocalService,
    gateway_env,
    local_gateway,
    read_finished,
    read_message,
    sse_events,
    streaming_chat,
    wait_for,
)
from tests.conftest import redis_url_or_skip


@pytest.mark.slow  # kills a gateway process
def test_gateway_killed_mid_stream_is_recovered_by_the_next_one(
    gateway_process: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.extend([Plan(delay=0.05), Plan(delay=0.01)])
    options = {"temperature": 0.3, "seed": 11}
    with streaming_chat(gateway_process, deltas=8, options=options) as (message_id, _):
        wait_for(lambda: read_message(process_store, message_id)["content"])
        gateway_process.kill(signal.SIGKILL)
    assert read_message(process_store, message_id)["status"] == "in_progress"
    gateway_process.start()  # a new instance: it finds the orphan once its lease expires
    final = read_finished(process_store, message_id)
    assert (final["content"], final["status"], final["attempts"]) == (TEXT, "complete", 2)
    recovery = fake_openai.state.requests[-1]
    assert recovery["messages"][-1]["role"] == "assistant"  # a continuation, with the answer's options
    assert (recovery["temperature"], recovery["seed"]) == (0.3, 11)


@pytest.mark.slow  # kills a gateway process
@pytest.mark.serial  # a time limit of its own: make test runs it alone
def test_a_gateway_restarted_under_the_same_instance_id_takes_its_answers_back_at_once(
    tmp_path: Path, persistence: Service, process_store: httpx.Client, fake_openai: FastAPI, fake_openai_url: str
) -> None:
    """Its leases are long and its scans rare: it does not wait for either to take back what it held."""
    fake_openai.state.plans.extend([Plan(delay=0.05), Plan()])
    settings = {"INSTANCE_ID": "gateway-a", "LEASE_SECONDS": "600", "RECOVERY_INTERVAL_SECONDS": "600"}
    env = gateway_env(tmp_path, persistence.url, fake_openai_url, **settings)
    gateway = Service.uvicorn("chat_gateway.main:create_app", env, tmp_path / "a.log").start()
    try:
        with streaming_chat(gateway, deltas=8) as (message_id, _):
            wait_for(lambda: read_message(process_store, message_id)["content"])
            gateway.kill(signal.SIGKILL)
        restarted = time.monotonic()
        gateway.start()
        final = read_finished(process_store, message_id)
    finally:
        gateway.kill(signal.SIGTERM)
    assert time.monotonic() - restarted < 10
    assert (final["content"], final["status"]) == (TEXT, "complete")
    assert fake_openai.state.requests[-1]["messages"][-1]["role"] == "assistant"  # continued, not regenerated


@pytest.mark.slow  # kills a gateway process
def test_an_openai_call_whose_gateway_died_is_continued_from_the_clients_own_prompt(
    gateway_process: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    """The session's stored history holds only the new turn; the recovering gateway uses what the client sent."""
    fake_openai.state.plans.extend([Plan(delay=0.05), Plan(delay=0.01)])
    messages = [
        {"role": "system", "content": "Answer like a guidebook."},
        {"role": "user", "content": "Where is Lyon?"},
        {"role": "assistant", "content": "In France."},
        {"role": "user", "content": "Tell me more."},
    ]
    body = {"model": "fake-model", "stream": True, "messages": messages, "temperature": 0.5}
    with httpx.stream("POST", f"{gateway_process.url}/v1/chat/completions", json=body, timeout=30) as response:
        lines = (line for line in response.iter_lines() if line.startswith("data: {"))
        message_id = uuid.UUID(json.loads(next(lines)[6:])["id"].removeprefix("chatcmpl-"))
        for _ in range(8):
            next(lines)
        wait_for(lambda: read_message(process_store, str(message_id))["content"])
        gateway_process.kill(signal.SIGKILL)
    gateway_process.start()
    final = read_finished(process_store, str(message_id))
    assert (final["content"], final["status"], final["attempts"]) == (TEXT, "complete", 2)
    recovery = fake_openai.state.requests[-1]
    assert recovery["messages"][:4] == messages
    assert [m["role"] for m in recovery["messages"][4:]] == ["assistant"]  # continue this partial answer
    assert recovery["temperature"] == 0.5
    stored = process_store.get(f"/sessions/{final['session_id']}/messages").json()["items"]
    assert [(m["role"], m["content"]) for m in stored] == [("user", "Tell me more."), ("assistant", TEXT)]


@pytest.mark.slow  # kills the persistence process
def test_persistence_restarted_mid_stream_loses_nothing(
    gateway_process: Service, persistence: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.03))
    text, restarter = "", threading.Timer(0.5, persistence.start)
    with httpx.stream(
        "POST", f"{gateway_process.url}/chat", json={"message": "hi", "stream": True}, timeout=60
    ) as response:
        events = sse_events(response)
        message_id = next(events).data["message_id"]
        for event in events:
            if event.event == "delta":
                text += event.data["text"]
                if len(text) > 30 and not restarter.is_alive() and not restarter.finished.is_set():
                    persistence.kill(signal.SIGKILL)
                    restarter.start()  # the client's stream goes on while persistence is down
            elif event.event in ("done", "error"):
                assert event.event == "done", event.data
    restarter.join()
    assert text == TEXT
    assert read_finished(process_store, message_id)["content"] == TEXT


@pytest.mark.slow  # stops a gateway process
def test_stopped_gateway_finishes_answers_within_its_grace_period(
    gateway_process: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.03))
    with streaming_chat(gateway_process) as (message_id, _):
        gateway_process.kill(signal.SIGTERM)  # returns once the process has exited
    final = read_message(process_store, message_id)
    assert (final["content"], final["status"], final["attempts"]) == (TEXT, "complete", 1)


@pytest.mark.slow  # stops a gateway process
def test_stopped_gateway_releases_what_outlives_the_grace_period(
    tmp_path: Path, gateway_process: Service, persistence: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    gateway_process.kill(signal.SIGTERM)
    gateway_process.env["SHUTDOWN_GRACE_SECONDS"] = "0.3"
    gateway_process.start()
    fake_openai.state.plans.extend([Plan(delay=0.1), Plan()])
    with streaming_chat(gateway_process) as (message_id, _):
        gateway_process.kill(signal.SIGTERM)
    released = read_message(process_store, message_id)
    assert released["status"] == "in_progress"
    assert released["content"]
    assert message_id in {m["id"] for m in process_store.get("/messages/stale").json()}  # no wait for the lease
    upstream = gateway_process.env["OPENAI_BASE_URL"].removesuffix("/v1")
    env = gateway_env(tmp_path, persistence.url, upstream)
    other = Service.uvicorn("chat_gateway.main:create_app", env, tmp_path / "other.log").start()
    try:
        final = read_finished(process_store, message_id)
    finally:
        other.kill(signal.SIGTERM)
    assert (final["content"], final["status"], final["attempts"]) == (TEXT, "complete", 2)


@pytest.mark.slow  # kills a gateway process
def test_recovery_can_mark_orphans_failed_instead(
    tmp_path: Path, gateway_process: Service, persistence: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.05))
    with streaming_chat(gateway_process) as (message_id, _):
        wait_for(lambda: read_message(process_store, message_id)["content"])
        gateway_process.kill(signal.SIGKILL)
    gateway_process.env["RECOVERY_MODE"] = "fail"
    gateway_process.start()
    final = read_finished(process_store, message_id)
    assert final["status"] == "failed"
    assert final["error"].startswith("abandoned")
    assert final["content"]
    assert TEXT.startswith(final["content"])


def test_reattach_through_another_gateway_follows_the_answer(
    tmp_path: Path,
    gateway: LocalService,
    persistence_app: LocalService,
    store: httpx.Client,
    fake_openai: FastAPI,
    fake_openai_url: str,
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.03))
    with (
        local_gateway(tmp_path, persistence_app, fake_openai_url) as other,
        streaming_chat(gateway, deltas=2) as (message_id, _),
    ):
        url = f"{other.url}/chat/messages/{message_id}/stream"
        with httpx.stream("GET", url, params={"offset": 0}, timeout=30) as response:
            events = list(sse_events(response))
    assert "".join(e.data["text"] for e in events if e.event == "delta") == TEXT
    assert events[-1].event == "done"
    final = read_message(store, message_id)
    assert (final["content"], final["lease_owner"], final["attempts"]) == (TEXT, None, 1)


def test_reattach_through_another_gateway_from_text_not_yet_saved_waits_for_it(
    tmp_path: Path,
    gateway: LocalService,
    persistence_app: LocalService,
    store: httpx.Client,
    fake_openai: FastAPI,
    fake_openai_url: str,
) -> None:
    """The client saw text the first gateway had logged but not yet saved to persistence (which it does every
    30 s): the other gateway waits for that text to be saved, then goes on from the client's offset, instead of
    ending the stream in error."""
    fake_openai.state.plans.append(Plan(delay=0.03))
    late = {"ANSWER_LOG_URL": redis_url_or_skip(), "FLUSH_INTERVAL_SECONDS": "30", "FLUSH_BYTES": "100000"}
    with (
        local_gateway(tmp_path, persistence_app, fake_openai_url, **late) as saving_late,
        streaming_chat(saving_late, deltas=12) as (message_id, first),
    ):
        seen = int(next(e for e in first if e.event == "delta").id or 0)
        assert len(read_message(store, message_id)["content"]) < seen
        url = f"{gateway.url}/chat/messages/{message_id}/stream"
        with httpx.stream("GET", url, headers={"last-event-id": str(seen)}, timeout=30) as response:
            assert response.status_code == 200
            events = list(sse_events(response))
    assert "".join(e.data["text"] for e in events if e.event == "delta") == TEXT[seen:]
    assert events[-1].event == "done"
    # Past the end of an answer that has ended: refused before any stream starts.
    past = httpx.get(f"{gateway.url}/chat/messages/{message_id}/stream", params={"offset": len(TEXT) + 1}, timeout=30)
    assert (past.status_code, past.json()["code"], past.json()["length"]) == (409, "offset_mismatch", len(TEXT))
    beyond_any_answer = httpx.get(url, headers={"last-event-id": str(2**31)}, timeout=30)
    assert beyond_any_answer.status_code == 422, beyond_any_answer.text


def test_a_forged_last_event_id_past_the_end_is_answered_alike_by_every_gateway(
    tmp_path: Path,
    gateway: LocalService,
    persistence_app: LocalService,
    store: httpx.Client,
    fake_openai: FastAPI,
    fake_openai_url: str,
) -> None:
    """While the answer runs: followed until it ends, then an error (never done); once ended: a 409 up front."""
    fake_openai.state.plans.append(Plan(delay=0.02))
    forged = {"last-event-id": str(2**30)}

    def ending(through: LocalService, message_id: str) -> tuple[str, dict]:
        url = f"{through.url}/chat/messages/{message_id}/stream"
        with httpx.stream("GET", url, headers=forged, timeout=30) as response:
            assert response.status_code == 200
            events = list(sse_events(response))
        assert [e.event for e in events if e.event != "start"] == [events[-1].event]  # no text, just the ending
        return events[-1].event, events[-1].data

    with local_gateway(tmp_path, persistence_app, fake_openai_url) as other:
        with streaming_chat(gateway) as (message_id, _), ThreadPoolExecutor(2) as pool:
            endings = list(pool.map(ending, (gateway, other), (message_id, message_id)))
        for through in (gateway, other):
            refused = httpx.get(f"{through.url}/chat/messages/{message_id}/stream", headers=forged, timeout=30)
            assert (refused.status_code, refused.json()["code"]) == (409, "offset_mismatch")
    expected = {"status": "complete", "error": f"the answer ended at {len(TEXT)}, before offset {2**30}"}
    assert endings == [("error", expected), ("error", expected)]
    assert read_finished(store, message_id)["content"] == TEXT


@pytest.mark.slow  # pauses a gateway process
def test_a_gateway_paused_past_its_lease_never_shows_its_client_text_that_is_not_the_answer(
    tmp_path: Path, gateway_process: Service, persistence: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    """Frozen (SIGSTOP) longer than its lease, the gateway loses the answer to another, which ends it its own
    way; woken, it relays nothing unconfirmed: its client sees the stored answer, or a prefix of it and where to
    reattach from, and reattaching from there gives exactly the rest."""
    ending = " -- and then the other gateway ended it its own way."
    fake_openai.state.plans.extend([Plan(delay=0.05), Plan(continue_with=ending)])
    env = gateway_env(tmp_path, persistence.url, gateway_process.env["OPENAI_BASE_URL"].removesuffix("/v1"))
    other = Service.uvicorn("chat_gateway.main:create_app", env, tmp_path / "other.log").start()
    assert gateway_process.process is not None
    seen: list[str] = []
    try:
        body = {"message": "hi", "stream": True}
        with httpx.stream("POST", f"{gateway_process.url}/chat", json=body, timeout=30) as response:
            events = sse_events(response)
            message_id = next(events).data["message_id"]
            seen += [e.data["text"] for e in itertools.islice((e for e in events if e.event == "delta"), 5)]
            gateway_process.process.send_signal(signal.SIGSTOP)
            try:
                stored = read_finished(process_store, message_id)["content"]
            finally:
                gateway_process.process.send_signal(signal.SIGCONT)
            rest = list(events)
    finally:
        other.kill(signal.SIGTERM)
    assert stored.endswith(ending)
    client_text = "".join(seen + [e.data["text"] for e in rest if e.event == "delta"])
    if rest[-1].event == "done":
        assert client_text == stored
        return
    assert rest[-1].event == "error"
    reattach = re.search(r"reattach from (\d+)", rest[-1].data["error"])
    assert reattach is not None, rest[-1].data
    at = int(reattach.group(1))
    assert client_text[:at] == stored[:at]
    with httpx.stream(
        "GET", f"{gateway_process.url}/chat/messages/{message_id}/stream", params={"offset": at}
    ) as response:
        tail = "".join(e.data["text"] for e in sse_events(response) if e.event == "delta")
    assert client_text[:at] + tail == stored
