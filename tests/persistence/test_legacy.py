"""The original message API keeps working for its existing clients."""

import pytest
from fastapi.testclient import TestClient

from tests.persistence.conftest import random_id


def _post(client: TestClient, chat_id: str, content: str = "hello", role: str = "human", **extra):
    body = {"chat_id": chat_id, "content": content, "role": role, "sent_at": "2024-05-01T10:00:00"} | extra
    return client.post("/messages/", json=body)


def test_post_creates_the_chat_session_on_first_use(client: TestClient) -> None:
    chat_id = random_id()
    response = _post(client, chat_id, "What is the capital of France?")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"message_id", "chat_id", "content", "rating", "sent_at", "role"}
    assert (body["chat_id"], body["role"], body["rating"]) == (chat_id, "user", None)
    assert body["sent_at"] == "2024-05-01T10:00:00Z"
    session = client.get(f"/sessions/{chat_id}").json()
    assert session["title"] == "What is the capital of France?"
    stored = client.get(f"/messages/{body['message_id']}").json()
    assert (stored["session_id"], stored["status"]) == (chat_id, "complete")


@pytest.mark.parametrize(
    ("role", "stored"), [("human", "user"), ("ai", "assistant"), ("user", "user"), ("assistant", "assistant")]
)
def test_roles_of_both_vocabularies(client: TestClient, role: str, stored: str) -> None:
    assert _post(client, random_id(), role=role).json()["role"] == stored


def test_second_message_reuses_the_session_and_list_is_newest_first(client: TestClient) -> None:
    chat_id = random_id()
    first = _post(client, chat_id, "q").json()
    second = _post(client, chat_id, "a", role="ai", rating=True).json()
    listed = client.get("/messages/", params={"chat_id": chat_id})
    assert listed.status_code == 200
    assert [m["message_id"] for m in listed.json()] == [second["message_id"], first["message_id"]]
    assert listed.json()[0]["rating"] is True
    assert [m["message_id"] for m in client.get("/messages/", params={"chat_id": chat_id, "limit": 1}).json()] == [
        second["message_id"]
    ]
    assert client.get("/messages/", params={"chat_id": random_id()}).json() == []


def test_put_updates_content_and_rating(client: TestClient) -> None:
    message = _post(client, random_id(), "draft").json()
    url = f"/messages/{message['message_id']}"
    updated = client.put(url, json={"content": "final"})
    assert updated.status_code == 200
    assert (updated.json()["content"], updated.json()["rating"]) == ("final", None)
    assert client.put(url, json={"rating": False}).json() | {"sent_at": None} == updated.json() | {
        "rating": False,
        "sent_at": None,
    }
    assert client.put(f"/messages/{random_id()}", json={"content": "x"}).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"chat_id": "nope", "content": "x", "role": "human", "sent_at": "2024-05-01T10:00:00"},
        {"content": "x", "role": "human", "sent_at": "2024-05-01T10:00:00"},
        {"chat_id": "7b0c9f3e-0f7e-4a4e-9d1f-0b6f1c9d2a11", "content": "x", "role": "bot", "sent_at": "2024-05-01"},
        {"chat_id": "7b0c9f3e-0f7e-4a4e-9d1f-0b6f1c9d2a11", "content": "x", "role": "human", "sent_at": "yesterday"},
    ],
)
def test_bad_bodies_are_422(client: TestClient, body: dict) -> None:
    assert client.post("/messages/", json=body).status_code == 422


def test_list_needs_a_chat_id(client: TestClient) -> None:
    assert client.get("/messages/").status_code == 422


def test_missing_key_is_401_with_detail(client: TestClient) -> None:
    response = client.post("/messages/", json={}, headers={"x-api-key": ""})
    assert response.status_code == 401
    assert isinstance(response.json()["detail"], str)
