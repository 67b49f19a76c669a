"""The RAG chat-storage API (`/api/v1`) for its existing clients: request shapes from its README
(../shared/seeds/000_235ace2f3ccf329f.txt), over real HTTP with `Authorization: Bearer`, on SQLite and PostgreSQL.
Its resume is handed to a gateway process, which must continue the answer within its recovery interval."""

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from testing.chunks import tokens
from testing.processes import Service
from testing.upstream import TEXT, create_fake_openai
from tests.chat_gateway.conftest import gateway_env, wait_for
from tests.conftest import serve
from tests.persistence.conftest import API_KEY, random_id

SESSION_FIELDS = {"id", "user_id", "name", "is_favorite", "created_at", "updated_at"}
MESSAGE_FIELDS = {
    "id",
    "session_id",
    "sender",
    "content",
    "context",
    "status",
    "partial_content",
    "error_message",
    "timestamp",
}


@pytest.fixture
def rag(live_url: str) -> Iterator[httpx.Client]:
    """A client of the RAG API, as its README says to call it."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"{live_url}/api/v1", headers=headers, timeout=30) as client:
        yield client


def _session(rag: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = rag.post("/sessions", json={"user_id": "alice"} | fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _message(rag: httpx.Client, session_id: str, **fields: Any) -> dict[str, Any]:
    default = {"sender": "user", "content": "hi"} if "sender" not in fields else {}
    response = rag.post(f"/sessions/{session_id}/messages", json=default | fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_session_is_created_named_listed_and_is_the_same_session_everywhere(
    rag: httpx.Client, live: httpx.Client
) -> None:
    named = _session(rag, name="Refactoring the parser")
    assert set(named) == SESSION_FIELDS
    assert (named["user_id"], named["name"], named["is_favorite"]) == ("alice", "Refactoring the parser", False)
    assert _session(rag)["name"] == "New chat"
    ours = live.get(f"/sessions/{named['id']}").json()
    assert (ours["title"], ours["user_id"]) == ("Refactoring the parser", "alice")
    assert rag.get(f"/sessions/{named['id']}").json() == named


def test_sessions_are_listed_per_user_in_pages_with_their_total(rag: httpx.Client) -> None:
    created = [_session(rag, name=f"s{i}") for i in range(5)]
    _session(rag, user_id="bob")
    page = rag.get("/sessions", params={"user_id": "alice", "skip": 1, "limit": 2})
    assert page.status_code == 200
    assert set(page.json()) == {"sessions", "total"}
    assert page.json()["total"] == 5
    # Newest activity first (after favorites), as everywhere else.
    assert [s["name"] for s in page.json()["sessions"]] == ["s3", "s2"]
    everyone = rag.get("/sessions").json()
    assert everyone["total"] == 6
    assert len(everyone["sessions"]) == 6
    beyond = rag.get("/sessions", params={"user_id": "alice", "skip": 10}).json()
    assert beyond == {"sessions": [], "total": 5}
    assert {s["id"] for s in rag.get("/sessions", params={"user_id": "alice"}).json()["sessions"]} == {
        s["id"] for s in created
    }


def test_rename_favorite_and_delete(rag: httpx.Client, live: httpx.Client) -> None:
    session = _session(rag)
    url = f"/sessions/{session['id']}"
    renamed = rag.put(url, json={"name": "Renamed"})
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Renamed"
    assert rag.patch(f"{url}/favorite").json()["is_favorite"] is True
    assert rag.patch(f"{url}/favorite").json()["is_favorite"] is False
    assert rag.patch(f"{url}/favorite", params={"is_favorite": "true"}).json()["is_favorite"] is True
    assert rag.patch(f"{url}/favorite", params={"is_favorite": "true"}).json()["is_favorite"] is True
    assert rag.patch(f"{url}/favorite", params={"is_favorite": "false"}).json()["is_favorite"] is False
    _message(rag, session["id"])
    assert rag.delete(url).status_code == 204
    for response in (rag.delete(url), rag.get(f"{url}/messages"), rag.put(url, json={"name": "x"})):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert live.get(f"/sessions/{session['id']}").status_code == 404


def test_messages_are_stored_and_listed_oldest_first_with_their_total(rag: httpx.Client, live: httpx.Client) -> None:
    session = _session(rag)
    context = {"documents": [{"path": "src/parser.py", "text": "def parse(): ..."}]}
    question = _message(rag, session["id"], content="Why does parse fail?", context=context)
    assert set(question) == MESSAGE_FIELDS
    assert (question["sender"], question["status"], question["context"]) == ("user", "complete", context)
    assert (question["partial_content"], question["error_message"]) == (None, None)
    answer = _message(rag, session["id"], sender="ai", content="Because of the lexer.")
    assert (answer["sender"], answer["content"], answer["status"]) == ("ai", "Because of the lexer.", "complete")
    listed = rag.get(f"/sessions/{session['id']}/messages")
    assert listed.json()["total"] == 2
    assert [m["id"] for m in listed.json()["messages"]] == [question["id"], answer["id"]]
    second = rag.get(f"/sessions/{session['id']}/messages", params={"skip": 1, "limit": 5}).json()
    assert ([m["id"] for m in second["messages"]], second["total"]) == ([answer["id"]], 2)
    # The same messages, in our own vocabulary.
    ours = live.get(f"/sessions/{session['id']}/messages").json()["items"]
    assert [(m["role"], m["content"]) for m in ours] == [
        ("user", "Why does parse fail?"),
        ("assistant", "Because of the lexer."),
    ]


def test_an_unfinished_answer_shows_its_saved_text_as_partial_content(rag: httpx.Client, live: httpx.Client) -> None:
    session = _session(rag)
    _message(rag, session["id"], content="Explain traboules")
    failed = _message(
        rag, session["id"], sender="ai", status="failed", partial_content="Traboules are", error_message="timeout"
    )
    assert (failed["status"], failed["content"], failed["partial_content"]) == ("failed", "", "Traboules are")
    assert failed["error_message"] == "timeout"
    stored = live.get(f"/messages/{failed['id']}").json()
    assert (stored["content"], stored["status"], stored["error"]) == ("Traboules are", "failed", "timeout")
    pending = _message(rag, session["id"], sender="ai", status="pending")
    assert (pending["content"], pending["partial_content"]) == ("", "")


def test_an_answer_generated_through_the_gateway_reads_as_the_rag_api_shows_it(
    rag: httpx.Client, live: httpx.Client
) -> None:
    session = live.post("/sessions", json={"user_id": "alice"}).json()
    turn = live.post(
        f"/sessions/{session['id']}/turns", json={"inputs": [{"content": "q"}], "owner": "gateway-1"}
    ).json()
    live.post(f"/messages/{turn['answer']['id']}/append", json={"offset": 0, "text": "Half an ans"})
    messages = rag.get(f"/sessions/{session['id']}/messages").json()["messages"]
    assert [(m["sender"], m["status"], m["content"], m["partial_content"]) for m in messages] == [
        ("user", "complete", "q", None),
        ("ai", "in_progress", "", "Half an ans"),
    ]


def test_resume_hands_a_failed_or_pending_answer_to_the_gateways(rag: httpx.Client, live: httpx.Client) -> None:
    session = _session(rag)
    _message(rag, session["id"], content="q")
    failed = _message(rag, session["id"], sender="ai", status="failed", partial_content="Half")
    response = rag.post(f"/sessions/{session['id']}/resume")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "in_progress"
    assert (body["message"]["id"], body["message"]["partial_content"]) == (failed["id"], "Half")
    # Left as a dead gateway leaves an answer: crash recovery finds it at its next scan.
    assert [m["id"] for m in live.get("/messages/stale").json()] == [failed["id"]]
    stored = live.get(f"/messages/{failed['id']}").json()
    assert (stored["status"], stored["lease_owner"], stored["content"]) == ("in_progress", None, "Half")
    # Asked again before a gateway took it: still handed over, nothing changes.
    assert rag.post(f"/sessions/{session['id']}/resume").json()["message"]["id"] == failed["id"]
    # Once a gateway holds it, there is nothing to hand over.
    assert live.post(f"/messages/{failed['id']}/claim", json={"owner": "gateway-1"}).status_code == 200
    held = rag.post(f"/sessions/{session['id']}/resume")
    assert (held.status_code, held.json()["code"]) == (409, "lease_held")
    assert "being generated" in held.json()["detail"]


@pytest.mark.parametrize(
    ("messages", "why"),
    [
        ([], "has no answer"),
        ([{"sender": "user", "content": "q"}], "has no answer"),
        ([{"sender": "user", "content": "q"}, {"sender": "ai", "content": "a"}], "complete"),
    ],
)
def test_nothing_to_resume_is_a_409_saying_why(rag: httpx.Client, messages: list[dict], why: str) -> None:
    session = _session(rag)
    for message in messages:
        _message(rag, session["id"], **message)
    response = rag.post(f"/sessions/{session['id']}/resume")
    assert response.status_code == 409
    assert response.json()["code"] == "nothing_to_resume"
    assert why in response.json()["detail"]
    assert rag.post(f"/sessions/{random_id()}/resume").status_code == 404


def test_a_pending_answer_is_resumed_too(rag: httpx.Client) -> None:
    session = _session(rag)
    _message(rag, session["id"], content="q")
    _message(rag, session["id"], sender="ai", status="pending")
    assert rag.post(f"/sessions/{session['id']}/resume").json()["status"] == "in_progress"


def test_health_needs_the_key(rag: httpx.Client, live_url: str) -> None:
    assert rag.get("/health").json() == {"status": "ok"}
    assert httpx.get(f"{live_url}/api/v1/health").status_code == 401
    assert httpx.get(f"{live_url}/api/v1/health", headers={"x-api-key": API_KEY}).status_code == 200


def test_unknown_fields_are_ignored(rag: httpx.Client) -> None:
    session = _session(rag, name="n", description="from an older client")
    message = _message(rag, session["id"], tokens=12, model="gpt-4")
    assert message["content"] == "hi"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sessions", {}),
        ("/sessions", {"user_id": ""}),
        ("/sessions", {"user_id": "a\x00b"}),
        ("/sessions", {"user_id": "alice", "name": ""}),
        ("/sessions/{id}/messages", {"sender": "bot", "content": "x"}),
        ("/sessions/{id}/messages", {"sender": "user", "content": "a\x00b"}),
        ("/sessions/{id}/messages", {"sender": "ai", "status": "in_progress"}),
        ("/sessions/{id}/messages", {"sender": "ai", "status": "complete", "partial_content": "x"}),
        ("/sessions/{id}/messages", {"sender": "ai", "context": "not an object"}),
        ("/sessions/not-a-uuid/messages", {"sender": "user", "content": "x"}),
    ],
)
def test_what_cannot_be_stored_faithfully_is_a_422(rag: httpx.Client, path: str, body: dict) -> None:
    session = _session(rag)
    response = rag.post(path.replace("{id}", session["id"]), json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request"
    assert rag.get(f"/sessions/{session['id']}/messages").json()["total"] == 0


@pytest.mark.parametrize("params", [{"skip": -1}, {"limit": 0}, {"limit": 1001}, {"skip": "x"}])
def test_bad_pages_are_422(rag: httpx.Client, params: dict) -> None:
    assert rag.get("/sessions", params=params).status_code == 422
    assert rag.get(f"/sessions/{random_id()}/messages", params=params).status_code == 422


def test_errors_have_the_one_shape(rag: httpx.Client) -> None:
    missing = rag.get(f"/sessions/{random_id()}/messages")
    assert missing.status_code == 404
    assert set(missing.json()) == {"detail", "code"}
    assert rag.post(f"/sessions/{random_id()}/messages", json={"sender": "user", "content": "x"}).status_code == 404


# Resume, handed to a gateway running against the same persistence service.

RECOVERY_INTERVAL = 2.0


@pytest.fixture
def running_gateway(live_url: str, tmp_path: Path) -> Iterator[tuple[Service, FastAPI]]:
    """A gateway process scanning for orphans every RECOVERY_INTERVAL seconds, with a fake upstream."""
    upstream = create_fake_openai()
    with serve(upstream) as upstream_url:
        env = gateway_env(
            tmp_path, live_url, upstream_url, API_KEY=API_KEY, RECOVERY_INTERVAL_SECONDS=str(RECOVERY_INTERVAL)
        )
        gateway = Service.uvicorn("chat_gateway.main:create_app", env, tmp_path / "gateway.log").start()
        try:
            yield gateway, upstream
        finally:
            gateway.kill(signal.SIGTERM)


@pytest.mark.slow
@pytest.mark.parametrize("status", ["failed", "pending"])
def test_a_resumed_answer_is_continued_by_a_running_gateway_within_its_recovery_interval(
    rag: httpx.Client, live: httpx.Client, running_gateway: tuple[Service, FastAPI], status: str
) -> None:
    _, upstream = running_gateway
    partial = "".join(tokens(TEXT)[:6]) if status == "failed" else ""
    session = _session(rag, name="Lyon")
    _message(rag, session["id"], content="Tell me about Lyon")
    answer = _message(rag, session["id"], sender="ai", status=status, partial_content=partial, content="")
    handed = time.monotonic()
    assert rag.post(f"/sessions/{session['id']}/resume").status_code == 202

    def finished() -> dict | None:
        message = rag.get(f"/sessions/{session['id']}/messages").json()["messages"][-1]
        return message if message["status"] in ("complete", "failed") else None

    done = wait_for(finished, timeout=RECOVERY_INTERVAL + 10)
    assert time.monotonic() - handed < RECOVERY_INTERVAL + 5
    assert (done["id"], done["status"], done["content"], done["partial_content"]) == (
        answer["id"],
        "complete",
        TEXT,
        None,
    )
    # Continued from its saved text: one upstream request, which ends with the partial answer; nothing regenerated.
    assert len(upstream.state.requests) == 1
    sent = upstream.state.requests[0]["messages"]
    assert sent[0] == {"role": "user", "content": "Tell me about Lyon"}
    if partial:
        assert sent[-1] == {"role": "assistant", "content": partial}
    stored = live.get(f"/messages/{answer['id']}").json()
    assert (stored["attempts"], stored["lease_owner"], stored["finish_reason"]) == (1, None, "stop")
    again = rag.post(f"/sessions/{session['id']}/resume")
    assert (again.status_code, again.json()["code"]) == (409, "nothing_to_resume")


def test_a_tools_result_an_agent_stored_elsewhere_is_listed_as_tool(rag: httpx.Client, live: httpx.Client) -> None:
    session = _session(rag)
    live.post(f"/sessions/{session['id']}/messages", json={"role": "tool", "content": "18°C", "tool_call_id": "c1"})
    listed = rag.get(f"/sessions/{session['id']}/messages")
    assert listed.status_code == 200, listed.text
    assert [(m["sender"], m["content"]) for m in listed.json()["messages"]] == [("tool", "18°C")]
