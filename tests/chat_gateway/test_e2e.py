"""End to end: the persistence service and the gateway as real processes, a fake upstream on 127.0.0.1.

Every scenario asserts the final stored answer exactly.
"""

import contextlib
import itertools
import json
import math
import random
import re
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from testing.chunks import tokens
from testing.processes import Service
from testing.upstream import MODEL, TEXT, Plan
from tests.chat_gateway.conftest import (
    Event,
    LocalService,
    gateway_env,
    local_gateway,
    read_finished,
    read_message,
    sse_events,
    wait_for,
)
from tests.conftest import redis_url_or_skip


@contextmanager
def streaming_chat(
    gateway: LocalService | Service, deltas: int = 1, **fields: object
) -> Iterator[tuple[str, Iterator[Event]]]:
    """A streamed chat, once its first ``deltas`` deltas have arrived: its answer's id and the rest of the events."""
    body = {"message": "hi", "stream": True, **fields}
    with httpx.stream("POST", f"{gateway.url}/chat", json=body, timeout=30) as response:
        events = sse_events(response)
        message_id = next(events).data["message_id"]
        for _ in range(deltas):
            next(e for e in events if e.event == "delta")
        yield message_id, events


def test_json_chat_stores_question_and_answer(gateway: LocalService, store: httpx.Client, fake_openai: FastAPI) -> None:
    context = {"documents": [{"text": "Lyon is in France."}]}
    response = httpx.post(f"{gateway.url}/chat", json={"message": "Tell me about Lyon", "context": context}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["response"], body["status"]) == (TEXT, "complete")
    answer = read_message(store, body["message_id"])
    assert (answer["content"], answer["finish_reason"], answer["model"]) == (TEXT, "stop", "fake-model")
    assert answer["usage"]["completion_tokens"] == len(tokens(TEXT))
    messages = store.get(f"/sessions/{body['session_id']}/messages").json()["items"]
    assert [(m["role"], m["status"]) for m in messages] == [("user", "complete"), ("assistant", "complete")]
    assert messages[0]["context"] == context
    session = store.get(f"/sessions/{body['session_id']}").json()
    assert session["title"] == "Tell me about Lyon"
    sent = fake_openai.state.requests[0]["messages"]
    assert sent[0]["role"] == "system"
    assert "Lyon is in France." in sent[0]["content"]
    assert sent[-1] == {"role": "user", "content": "Tell me about Lyon"}


def test_streamed_chat_and_history_of_a_second_turn(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    with httpx.stream("POST", f"{gateway.url}/chat", json={"message": "hi", "stream": True}, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response))
    assert events[0].event == "start"
    deltas = [e for e in events if e.event == "delta"]
    assert "".join(e.data["text"] for e in deltas) == TEXT
    offsets = [int(e.id or 0) for e in deltas]
    assert offsets == sorted(offsets)
    assert offsets[-1] == len(TEXT)
    assert events[-1].event == "done"
    assert events[-1].data["status"] == "complete"
    ids = events[0].data
    assert read_message(store, ids["message_id"])["content"] == TEXT
    # A second turn in the same session sends the first one as history.
    second = httpx.post(
        f"{gateway.url}/chat",
        json={"message": "and then?", "session_id": ids["session_id"]},
        headers={"accept": "application/json"},
        timeout=30,
    ).json()
    assert second["session_id"] == ids["session_id"]
    sent = fake_openai.state.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == TEXT


def test_disconnect_then_reattach_with_last_event_id(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.02))
    seen, last_id, message_id = "", "0", ""
    with httpx.stream("POST", f"{gateway.url}/chat", json={"message": "hi", "stream": True}, timeout=30) as response:
        for event in sse_events(response):
            if event.event == "start":
                message_id = event.data["message_id"]
            if event.event == "delta":
                seen += event.data["text"]
                last_id = event.id or "0"
                if len(seen) > 40:
                    break  # the client goes away mid-answer
    assert int(last_id) == len(seen) < len(TEXT)
    url = f"{gateway.url}/chat/messages/{message_id}/stream"
    with httpx.stream("GET", url, headers={"last-event-id": last_id}, timeout=30) as response:
        rest = list(sse_events(response))
    assert seen + "".join(e.data["text"] for e in rest if e.event == "delta") == TEXT
    assert rest[-1].event == "done"
    assert read_finished(store, message_id)["content"] == TEXT
    # A finished answer replays from any offset.
    with httpx.stream("GET", url, params={"offset": 10}, timeout=30) as response:
        replay = list(sse_events(response))
    assert "".join(e.data["text"] for e in replay if e.event == "delta") == TEXT[10:]


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


def test_resume_after_failure_continues_the_partial_answer(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    # Paced: a drop straight after the sixth token could reset the connection before the gateway read any
    # of them (then nothing is relayed or stored, rightly, but there is no partial answer to resume).
    fake_openai.state.plans.extend([Plan(drop_after=6), Plan(status=401)])
    failed = httpx.post(f"{gateway.url}/chat", json={"message": "hi"}, timeout=30).json()
    stored = read_message(store, failed["message_id"])
    assert stored["status"] == "failed"
    six = "".join(tokens(TEXT)[:6])
    # Both in one comparison: a failure then shows whether the client saw the text as well as the store.
    assert (stored["content"], failed["partial"]) == (six, six)
    resumed = httpx.post(f"{gateway.url}/chat/sessions/{failed['session_id']}/resume", timeout=30)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["response"] == TEXT
    final = read_message(store, failed["message_id"])
    assert (final["content"], final["status"], final["attempts"]) == (TEXT, "complete", 2)
    again = httpx.post(f"{gateway.url}/chat/messages/{failed['message_id']}/resume", timeout=30)
    assert again.status_code == 409


def test_an_upstream_error_message_with_a_nul_is_stored_with_the_partial_answer(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """The error is stored as text can be (U+FFFD), not refused, which lost the partial answer with it."""
    fake_openai.state.plans.extend([Plan(drop_after=6), Plan(status=401, message="bad\x00key")])
    failed = httpx.post(f"{gateway.url}/chat", json={"message": "hi"}, timeout=30).json()
    stored = read_message(store, failed["message_id"])
    assert (stored["status"], stored["content"]) == ("failed", "".join(tokens(TEXT)[:6]))
    assert "bad\ufffdkey" in stored["error"]


def test_two_concurrent_resumes_start_one_generation(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.extend([Plan(drop_after=4), Plan(status=401), Plan(delay=0.01)])
    failed = httpx.post(f"{gateway.url}/chat", json={"message": "hi"}, timeout=30).json()
    barrier = threading.Barrier(2)

    def resume(_: int) -> httpx.Response:
        barrier.wait()
        return httpx.post(f"{gateway.url}/chat/messages/{failed['message_id']}/resume", timeout=30)

    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(resume, range(2)))
    assert Counter(r.status_code for r in responses) == {200: 1, 409: 1}
    assert len(fake_openai.state.requests) == 3
    assert read_message(store, failed["message_id"])["content"] == TEXT


def test_cancel_keeps_the_partial_text_and_can_be_resumed(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.05))
    with streaming_chat(gateway) as (message_id, events):
        cancelled = httpx.post(f"{gateway.url}/chat/messages/{message_id}/cancel", timeout=30)
        rest = list(events)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "failed"
    assert rest[-1].event == "error"
    assert rest[-1].data["error"] == "cancelled"
    stored = read_message(store, message_id)
    assert (stored["status"], stored["error"]) == ("failed", "cancelled")
    assert stored["content"]
    assert TEXT.startswith(stored["content"])
    assert stored["content"] != TEXT
    resumed = httpx.post(f"{gateway.url}/chat/messages/{message_id}/resume", timeout=30).json()
    assert resumed["response"] == TEXT


def test_deleting_the_session_mid_answer_stops_its_generation(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.1))  # about 4.5 s for the whole answer
    with streaming_chat(gateway) as (message_id, events):
        session_id = read_message(store, message_id)["session_id"]
        assert httpx.delete(f"{gateway.url}/chat/sessions/{session_id}", timeout=30).status_code == 204
        rest = list(events)
    assert rest[-1].event == "error"
    assert rest[-1].data == {"status": None, "error": "the answer was deleted (with its session)"}
    assert store.get(f"/messages/{message_id}").status_code == 404
    # The upstream request was dropped at the next append (every second), long before the answer's end.
    wait_for(lambda: fake_openai.state.open_streams == 0, timeout=3)
    streamed = "".join(e.data["text"] for e in rest if e.event == "delta")
    assert len(streamed) < len(TEXT) // 2


def test_idempotent_retry_attaches_to_the_same_answer(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.01))
    headers = {"idempotency-key": "retry-me-1"}
    request = {"message": "hi", "user_id": "alice"}
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(
            lambda _: httpx.post(f"{gateway.url}/chat", json=request, headers=headers, timeout=30), range(2)
        )
    third = httpx.post(f"{gateway.url}/chat", json=request, headers=headers, timeout=30)
    bodies = [r.json() for r in (first, second, third)]
    assert {b["message_id"] for b in bodies} == {bodies[0]["message_id"]}
    assert all(b["response"] == TEXT for b in bodies)
    assert len(fake_openai.state.requests) == 1
    assert len(store.get(f"/sessions/{bodies[0]['session_id']}/messages").json()["items"]) == 2
    other = httpx.post(f"{gateway.url}/chat", json={"message": "other", "user_id": "alice"}, headers=headers)
    assert other.status_code == 409


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


def test_partial_text_is_written_in_batches_with_an_answer_log(
    tmp_path: Path, persistence_app: LocalService, store: httpx.Client, fake_openai: FastAPI, fake_openai_url: str
) -> None:
    """The log makes each chunk durable before it is shown; persistence receives batches."""
    fake_openai.state.plans.append(Plan(delay=0.01))
    log = redis_url_or_skip()
    with local_gateway(tmp_path, persistence_app, fake_openai_url, ANSWER_LOG_URL=log) as logging:
        body = httpx.post(f"{logging.url}/chat", json={"message": "hi"}, timeout=30).json()
    final = read_message(store, body["message_id"])
    writes = final["version"] - 3  # minus the create, the claim and the final status
    assert 1 <= writes <= len(tokens(TEXT)) // 2, writes


def test_without_an_answer_log_each_write_follows_the_last(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """Persistence makes text durable: a write as soon as the one before returned, so at most one per chunk."""
    fake_openai.state.plans.append(Plan(delay=0.01))
    body = httpx.post(f"{gateway.url}/chat", json={"message": "hi"}, timeout=30).json()
    final = read_message(store, body["message_id"])
    assert (final["content"], final["status"]) == (TEXT, "complete")
    assert 1 <= final["version"] - 3 <= len(tokens(TEXT))


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


@pytest.mark.slow  # reads the persistence process's log
def test_request_id_follows_a_chat_into_persistence_and_metrics_count_it(
    gateway_process: Service, persistence: Service, fake_openai: FastAPI
) -> None:
    response = httpx.post(
        f"{gateway_process.url}/chat", json={"message": "hi"}, headers={"x-request-id": "chat-7"}, timeout=30
    )
    assert response.headers["x-request-id"] == "chat-7"
    logged = [json.loads(line) for line in persistence.output().splitlines() if line.startswith("{")]
    paths = {entry["path"] for entry in logged if entry.get("request_id") == "chat-7"}
    assert any(path.endswith("/turns") for path in paths)
    assert any(path.endswith("/append") for path in paths)  # written by the generation task
    metrics = httpx.get(f"{gateway_process.url}/metrics").text
    assert 'http_requests_total{method="POST",route="/chat",service="chat_gateway",status="200"}' in metrics
    tokens_line = next(line for line in metrics.splitlines() if line.startswith("chat_streamed_tokens_total "))
    assert float(tokens_line.split()[1]) >= len(tokens(TEXT))


def test_the_openai_sdk_works_by_changing_only_base_url(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="any", max_retries=0)
    first_turn = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "hi"}]
    raw = client.chat.completions.with_raw_response.create(model="fake-model", messages=first_turn)  # type: ignore[arg-type]
    session_id = raw.headers["x-session-id"]
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(tokens(TEXT))
    assert fake_openai.state.requests[-1]["messages"] == first_turn

    # The next turn sends the whole history, streamed with usage: only the new turn is stored.
    history = [*first_turn, {"role": "assistant", "content": TEXT}, {"role": "user", "content": "more"}]
    stream = client.chat.completions.create(  # type: ignore[call-overload]
        model="fake-model",
        messages=history,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Session-Id": session_id},
    )
    text, finish_reason, usage = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish_reason = chunk.choices[0].finish_reason or finish_reason
        usage = chunk.usage or usage
    assert (text, finish_reason) == (TEXT, "stop")
    assert usage is not None
    assert usage.completion_tokens == len(tokens(TEXT))
    stored = store.get(f"/sessions/{session_id}/messages").json()["items"]
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "hi"),
        ("assistant", TEXT),
        ("user", "more"),
        ("assistant", TEXT),
    ]
    assert fake_openai.state.requests[-1]["messages"] == history
    assert [model.id for model in client.models.list()] == ["fake-model"]


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


def test_a_value_persistence_refuses_is_the_clients_4xx_through_the_gateway(
    gateway: LocalService, store: httpx.Client
) -> None:
    """The gateway relays session routes; a value persistence finds invalid is the client's to fix, not a 502."""
    session_id = store.post("/sessions", json={"user_id": "anonymous", "title": "Kept"}).json()["id"]
    renamed = httpx.put(f"{gateway.url}/chat/sessions/{session_id}", json={"title": "a\x00b"}, timeout=30)
    assert renamed.status_code == 422, renamed.text
    assert "NUL" in renamed.json()["detail"]
    found = httpx.get(f"{gateway.url}/chat/search", params={"q": "a\x00b"}, timeout=30)
    assert found.status_code == 422, found.text
    assert store.get(f"/sessions/{session_id}").json()["title"] == "Kept"


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


def test_session_routes_relay_persistence_shapes(gateway: LocalService, store: httpx.Client) -> None:
    """What the gateway answers is persistence's own body, typed on the way (and documented in its OpenAPI)."""
    ana, ben = (store.post("/sessions", json={"user_id": user}).json()["id"] for user in ("ana", "ben"))
    reply = httpx.post(f"{gateway.url}/chat", json={"message": "Tell me about Lyon", "session_id": ana}, timeout=30)
    assert reply.status_code == 200, reply.text

    def relayed(method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{gateway.url}/chat{path}", timeout=30, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    assert relayed("GET", "/sessions", params={"user_id": "ana"}) == store.get("/sessions?user_id=ana").json()
    assert {ana, ben} <= {s["id"] for s in relayed("GET", "/sessions", params={"limit": 200})["items"]}
    # An empty filter matches no one, as persistence has it, rather than listing everyone's sessions.
    assert relayed("GET", "/sessions", params={"user_id": ""}) == {"items": [], "next_cursor": None}
    messages = relayed("GET", f"/sessions/{ana}/messages", params={"limit": 1})
    assert messages == store.get(f"/sessions/{ana}/messages", params={"limit": 1}).json()
    assert [m["role"] for m in messages["items"]] == ["user"]
    assert relayed("GET", "/search", params={"q": "lyon"}) == store.get("/search", params={"q": "lyon"}).json()
    assert relayed("GET", "/search", params={"q": "lyon", "user_id": "ben"})["items"] == []
    assert relayed("PUT", f"/sessions/{ben}", json={"title": "Lyon"}) == store.get(f"/sessions/{ben}").json()
    favorite = relayed("PATCH", f"/sessions/{ben}/favorite")
    assert favorite == store.get(f"/sessions/{ben}").json()
    assert favorite["is_favorite"] is True
    assert relayed("PATCH", f"/sessions/{ben}/favorite", params={"is_favorite": "true"})["is_favorite"] is True
    assert relayed("PATCH", f"/sessions/{ben}/favorite", json={"is_favorite": False})["is_favorite"] is False
    conflicting = httpx.patch(
        f"{gateway.url}/chat/sessions/{ben}/favorite", params={"is_favorite": "true"}, json={"is_favorite": False}
    )
    assert (conflicting.status_code, conflicting.json()["code"]) == (400, "bad_request")

    paths = httpx.get(f"{gateway.url}/openapi.json", timeout=30).json()["paths"]
    listed = paths["/chat/sessions"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed == {"$ref": "#/components/schemas/Page_SessionRead_"}


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


def test_one_message_is_read_through_the_gateway_without_its_prompt(gateway: LocalService, store: httpx.Client) -> None:
    body = httpx.post(f"{gateway.url}/chat", json={"message": "Tell me about Lyon"}, timeout=30).json()
    message = httpx.get(f"{gateway.url}/chat/messages/{body['message_id']}", timeout=10)
    assert message.status_code == 200, message.text
    stored = read_message(store, body["message_id"])
    assert (message.json()["content"], message.json()["status"]) == (stored["content"], "complete")
    assert not {"prompt", "conversation_key"} & message.json().keys()
    assert httpx.get(f"{gateway.url}/chat/messages/{uuid.uuid4()}", timeout=10).status_code == 404
