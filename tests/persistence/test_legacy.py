"""The original message API works for its existing clients: request shapes from its README
(../shared/seeds/004_57b8813ad02668df.txt), over real HTTP, on SQLite and PostgreSQL."""

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from persistence.api.legacy import LIST_DEFAULT, LIST_MAX
from persistence.models import Message
from tests.persistence.conftest import API_KEY, random_id

SENT_AT = "2024-05-01T10:00:00"


def _post(http: httpx.Client, chat_id: str, content: str = "hello", role: str = "human", **extra):
    body = {"chat_id": chat_id, "content": content, "role": role, "sent_at": SENT_AT} | extra
    return http.post("/messages/", json=body)


# The original service's own suite (create, update, list, unauthorized), as its client sends them.


def test_create_message(live: httpx.Client) -> None:
    chat_id = random_id()
    response = _post(live, chat_id, "What is the capital of France?", rating=None)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"message_id", "chat_id", "content", "rating", "sent_at", "role"}
    assert (body["chat_id"], body["content"], body["role"], body["rating"]) == (
        chat_id,
        "What is the capital of France?",
        "human",
        None,
    )
    assert body["sent_at"] == "2024-05-01T10:00:00Z"
    uuid.UUID(body["message_id"], version=4)


def test_update_message(live: httpx.Client) -> None:
    message = _post(live, random_id(), "draft", role="ai").json()
    url = f"/messages/{message['message_id']}"
    updated = live.put(url, json={"content": "final", "rating": True})
    assert updated.status_code == 200
    assert (updated.json()["content"], updated.json()["rating"], updated.json()["role"]) == ("final", True, "ai")
    assert live.put(url, json={"rating": None}).json()["rating"] is None
    assert live.put(f"/messages/{random_id()}", json={"content": "x"}).status_code == 404


def test_get_messages_without_a_chat_lists_every_chat_oldest_first(live: httpx.Client) -> None:
    first, second = random_id(), random_id()
    sent = [
        _post(live, first, "q1").json(),
        _post(live, second, "q2").json(),
        _post(live, first, "a1", role="ai").json(),
    ]
    response = live.get("/messages/")
    assert response.status_code == 200
    assert [m["message_id"] for m in response.json()] == [m["message_id"] for m in sent]
    assert [m["role"] for m in response.json()] == ["human", "human", "ai"]


def test_unauthorized(live_url: str) -> None:
    for headers in ({}, {"x-api-key": "wrong"}):
        response = httpx.get(f"{live_url}/messages/", headers=headers)
        assert response.status_code == 401
        assert isinstance(response.json()["detail"], str)


# The original chat service's flow, as its code does it.


def test_the_original_chat_services_history_flow(live: httpx.Client) -> None:
    """Each turn: POST the question as human, then the answer as ai (a new chat_id for every message), then
    GET /messages/ as history, human meaning a user message and anything else an AI one, oldest first."""
    turns = [("Hi, I am Ana.", "Hello Ana!"), ("What is my name?", "Your name is Ana.")]
    for question, answer in turns:
        for content, role in ((question, "human"), (answer, "ai")):
            assert _post(live, random_id(), content, role=role).status_code == 200
    history = live.get("/messages/").json()
    prompt = [("user" if m["role"] == "human" else "ai", m["content"]) for m in history]
    assert prompt == [
        ("user", "Hi, I am Ana."),
        ("ai", "Hello Ana!"),
        ("user", "What is my name?"),
        ("ai", turns[1][1]),
    ]


# Roles, bodies and limits.


@pytest.mark.parametrize(
    ("role", "stored"), [("human", "user"), ("ai", "assistant"), ("user", "user"), ("assistant", "assistant")]
)
def test_a_role_comes_back_as_sent_and_the_rest_of_the_api_sees_ours(
    live: httpx.Client, role: str, stored: str
) -> None:
    chat_id = random_id()
    message = _post(live, chat_id, role=role).json()
    assert message["role"] == role
    assert live.put(f"/messages/{message['message_id']}", json={"rating": True}).json()["role"] == role
    assert [m["role"] for m in live.get("/messages/", params={"chat_id": chat_id}).json()] == [role]
    assert live.get(f"/messages/{message['message_id']}").json()["role"] == stored
    assert live.get(f"/sessions/{chat_id}/messages").json()["items"][0]["role"] == stored
    export = live.get(f"/sessions/{chat_id}/export").json()
    assert export["messages"][0]["role"] == stored


def test_the_role_spelling_survives_export_and_import(live: httpx.Client) -> None:
    chat_id = random_id()
    _post(live, chat_id, role="human")
    _post(live, chat_id, role="ai")
    document = live.get(f"/sessions/{chat_id}/export").json()
    live.delete(f"/sessions/{chat_id}")
    assert live.post("/sessions/import", json=document).status_code == 201
    assert [m["role"] for m in live.get("/messages/", params={"chat_id": chat_id}).json()] == ["human", "ai"]


def test_messages_of_a_gateway_session_come_back_in_our_roles(live: httpx.Client) -> None:
    session = live.post("/sessions", json={"user_id": "u1"}).json()
    live.post(f"/sessions/{session['id']}/messages", json={"role": "user", "content": "q"})
    live.post(f"/sessions/{session['id']}/messages", json={"role": "assistant", "content": "a", "status": "complete"})
    tool = {"role": "tool", "content": "18°C", "tool_call_id": "call_1"}  # an agent's, through the other APIs
    live.post(f"/sessions/{session['id']}/messages", json=tool)
    listed = live.get("/messages/", params={"chat_id": session["id"]}).json()
    assert [(m["role"], m["content"]) for m in listed] == [("user", "q"), ("assistant", "a"), ("tool", "18°C")]
    assert live.get("/messages/").status_code == 200


def test_a_chats_list_is_its_newest_messages_oldest_first(live: httpx.Client) -> None:
    chat_id = random_id()
    sent = [_post(live, chat_id, f"m{i}", role="human" if i % 2 == 0 else "ai").json() for i in range(4)]
    _post(live, random_id(), "another chat")
    listed = live.get("/messages/", params={"chat_id": chat_id})
    assert [m["message_id"] for m in listed.json()] == [m["message_id"] for m in sent]
    newest_two = live.get("/messages/", params={"chat_id": chat_id, "limit": 2}).json()
    assert [m["content"] for m in newest_two] == ["m2", "m3"]
    assert [m["content"] for m in live.get("/messages/", params={"limit": 1}).json()] == ["another chat"]
    assert live.get("/messages/", params={"chat_id": random_id()}).json() == []


def test_the_list_is_bounded(live: httpx.Client) -> None:
    assert LIST_DEFAULT >= 1000
    assert live.get("/messages/", params={"limit": LIST_MAX}).status_code == 200
    for limit in (0, LIST_MAX + 1, "all"):
        response = live.get("/messages/", params={"limit": limit})
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_request"


def test_the_list_without_a_chat_reads_the_newest_rows_by_index(app: FastAPI, live: httpx.Client) -> None:
    """On a large table the list is one index seek: the default limit of the newest of 2,000 messages."""
    session = live.post("/sessions", json={"user_id": "legacy"}).json()
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        {
            "id": uuid.uuid4(),
            "session_id": uuid.UUID(session["id"]),
            "role": "user",
            "content": f"m{i}",
            "status": "complete",
            "attempts": 0,
            "version": 1,
            "sent_at": start + timedelta(seconds=i),
            "created_at": start + timedelta(seconds=i),
            "updated_at": start + timedelta(seconds=i),
        }
        for i in range(2000)
    ]
    with app.state.engine.begin() as connection:
        connection.execute(sa.insert(Message), rows)
    listed = live.get("/messages/").json()
    assert len(listed) == LIST_DEFAULT
    assert [m["content"] for m in listed] == [f"m{i}" for i in range(2000 - LIST_DEFAULT, 2000)]
    with app.state.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("ANALYZE messages"))
            plan = connection.execute(
                sa.text("EXPLAIN SELECT * FROM messages ORDER BY created_at DESC, id DESC LIMIT 1000")
            ).scalars()
        else:
            plan = connection.execute(
                sa.text("EXPLAIN QUERY PLAN SELECT * FROM messages ORDER BY created_at DESC, id DESC LIMIT 1000")
            ).scalars(3)
        assert "ix_messages_created" in " ".join(str(line) for line in plan)


def test_unknown_fields_are_ignored_and_rating_may_be_left_out(live: httpx.Client) -> None:
    response = _post(live, random_id(), "x", client_version="1.2", tags=["a"], note="has a \x00 it never reads")
    assert response.status_code == 200
    assert response.json()["rating"] is None
    message_id = response.json()["message_id"]
    assert live.put(f"/messages/{message_id}", json={"content": "y", "edited_by": "bob"}).json()["content"] == "y"


@pytest.mark.parametrize(
    "body",
    [
        {"chat_id": "nope", "content": "x", "role": "human", "sent_at": SENT_AT},
        {"content": "x", "role": "human", "sent_at": SENT_AT},
        {"chat_id": "7b0c9f3e-0f7e-4a4e-9d1f-0b6f1c9d2a11", "content": "x", "role": "bot", "sent_at": SENT_AT},
        {"chat_id": "7b0c9f3e-0f7e-4a4e-9d1f-0b6f1c9d2a11", "content": "x", "role": "human", "sent_at": "yesterday"},
        {"chat_id": "7b0c9f3e-0f7e-4a4e-9d1f-0b6f1c9d2a11", "content": "a\x00b", "role": "human", "sent_at": SENT_AT},
        {
            "chat_id": "7b0c9f3e-0f7e-4a4e-9d1f-0b6f1c9d2a11",
            "content": "x",
            "role": "human",
            "sent_at": SENT_AT,
            "rating": "maybe",
        },
    ],
)
def test_what_cannot_be_stored_faithfully_is_a_422(live: httpx.Client, body: dict) -> None:
    response = live.post("/messages/", json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"
    assert live.get("/messages/").json() == []


def test_a_bad_chat_id_in_the_query_and_a_nul_in_an_update_are_422(live: httpx.Client) -> None:
    assert live.get("/messages/", params={"chat_id": "nope"}).status_code == 422
    message = _post(live, random_id(), "kept").json()
    assert live.put(f"/messages/{message['message_id']}", json={"content": "a\x00b"}).status_code == 422
    assert live.put(f"/messages/{message['message_id']}", json={"content": None}).status_code == 422
    assert live.get("/messages/").json()[0]["content"] == "kept"


def test_bearer_works_here_too(live_url: str) -> None:
    response = httpx.get(f"{live_url}/messages/", headers={"authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 200
