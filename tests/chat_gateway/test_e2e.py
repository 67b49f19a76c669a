"""End to end: the persistence service and the gateway as real processes, a fake upstream on 127.0.0.1.

Every scenario asserts the final stored answer exactly. What the upstream does is in test_e2e_upstream.py,
gateways and persistence that die, stop or pause in test_e2e_recovery.py.
"""

import json
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from testing.chunks import tokens
from testing.processes import Service
from testing.upstream import TEXT, Plan
from tests.chat_gateway.conftest import (
    LocalService,
    local_gateway,
    read_finished,
    read_message,
    sse_events,
    streaming_chat,
    wait_for,
)
from tests.conftest import redis_url_or_skip


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


def test_one_message_is_read_through_the_gateway_without_its_prompt(gateway: LocalService, store: httpx.Client) -> None:
    body = httpx.post(f"{gateway.url}/chat", json={"message": "Tell me about Lyon"}, timeout=30).json()
    message = httpx.get(f"{gateway.url}/chat/messages/{body['message_id']}", timeout=10)
    assert message.status_code == 200, message.text
    stored = read_message(store, body["message_id"])
    assert (message.json()["content"], message.json()["status"]) == (stored["content"], "complete")
    assert not {"prompt", "conversation_key"} & message.json().keys()
    assert httpx.get(f"{gateway.url}/chat/messages/{uuid.uuid4()}", timeout=10).status_code == 404
