from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from tests.persistence.conftest import new_message, new_session, random_id


def test_create_session_returns_it_with_defaults(client: TestClient) -> None:
    response = client.post("/sessions", json={})
    assert response.status_code == 201
    body = response.json()
    assert body["user_id"] == "anonymous"
    assert body["title"] == "New chat"
    assert body["is_favorite"] is False
    assert body["metadata"] is None
    assert datetime.fromisoformat(body["created_at"]).utcoffset() == timedelta(0)


def test_create_and_get_session_with_metadata(client: TestClient) -> None:
    created = new_session(client, title="  Trip  ", metadata={"tags": ["travel"], "n": 1})
    assert created["title"] == "Trip"
    fetched = client.get(f"/sessions/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created
    # Lists read the table's columns, not the model's attributes: the same session, metadata included.
    assert client.get("/sessions", params={"user_id": created["user_id"]}).json()["items"] == [created]


def test_get_unknown_session_is_404(client: TestClient) -> None:
    response = client.get(f"/sessions/{random_id()}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_patch_changes_only_given_fields(client: TestClient) -> None:
    session = new_session(client, metadata={"a": 1})
    response = client.patch(f"/sessions/{session['id']}", json={"title": "Renamed"})
    assert response.status_code == 200
    body = response.json()
    assert (body["title"], body["is_favorite"], body["metadata"]) == ("Renamed", False, {"a": 1})
    assert body["updated_at"] > session["updated_at"]
    body = client.patch(f"/sessions/{session['id']}", json={"is_favorite": True, "metadata": None}).json()
    assert (body["title"], body["is_favorite"], body["metadata"]) == ("Renamed", True, None)


@pytest.mark.parametrize("body", [{"title": None}, {"title": ""}, {"title": "x" * 501}, {"is_favorite": "maybe"}])
def test_patch_rejects_bad_values(client: TestClient, body: dict) -> None:
    session = new_session(client)
    response = client.patch(f"/sessions/{session['id']}", json=body)
    assert response.status_code == 422
    assert client.get(f"/sessions/{session['id']}").json()["title"] == "Chat"


def test_put_renames(client: TestClient) -> None:
    session = new_session(client)
    response = client.put(f"/sessions/{session['id']}", json={"title": "New name"})
    assert response.status_code == 200
    assert response.json()["title"] == "New name"
    assert client.put(f"/sessions/{session['id']}", json={}).status_code == 422
    assert client.put(f"/sessions/{random_id()}", json={"title": "x"}).status_code == 404


def test_favorite_toggles_or_sets(client: TestClient) -> None:
    session = new_session(client)
    url = f"/sessions/{session['id']}/favorite"
    assert client.patch(url).json()["is_favorite"] is True
    assert client.patch(url).json()["is_favorite"] is False
    assert client.patch(url, json={"is_favorite": True}).json()["is_favorite"] is True
    assert client.patch(url, json={"is_favorite": True}).json()["is_favorite"] is True
    assert client.get(f"/sessions/{session['id']}").json()["is_favorite"] is True
    assert client.patch(f"/sessions/{random_id()}/favorite").status_code == 404
    assert client.patch(url, json={"is_favorite": None}).status_code == 422


def test_favorite_set_in_the_query_is_a_set_not_a_toggle(client: TestClient) -> None:
    session = new_session(client)
    url = f"/sessions/{session['id']}/favorite"
    for value, expected in (("true", True), ("true", True), ("false", False), ("false", False), ("1", True)):
        assert client.patch(url, params={"is_favorite": value}).json()["is_favorite"] is expected
    assert client.patch(url, params={"is_favorite": "true"}, json={"is_favorite": True}).json()["is_favorite"] is True
    conflicting = client.patch(url, params={"is_favorite": "false"}, json={"is_favorite": True})
    assert (conflicting.status_code, conflicting.json()["code"]) == (400, "bad_request")
    assert client.patch(url, params={"is_favorite": "maybe"}).status_code == 422
    assert client.get(f"/sessions/{session['id']}").json()["is_favorite"] is True


def test_delete_removes_session_and_its_messages(client: TestClient) -> None:
    session = new_session(client)
    message = new_message(client, session["id"])
    other = new_session(client)
    kept = new_message(client, other["id"])
    assert client.delete(f"/sessions/{session['id']}").status_code == 204
    assert client.get(f"/sessions/{session['id']}").status_code == 404
    assert client.get(f"/messages/{message['id']}").status_code == 404
    assert client.get(f"/messages/{kept['id']}").status_code == 200
    assert client.delete(f"/sessions/{session['id']}").status_code == 404


def _ids(page: dict) -> list[str]:
    return [item["id"] for item in page["items"]]


def test_list_orders_favorites_first_then_newest_activity(client: TestClient) -> None:
    old = new_session(client, title="old")
    fav = new_session(client, title="fav", is_favorite=True)
    newest = new_session(client, title="newest")
    page = client.get("/sessions", params={"user_id": "u1"}).json()
    assert _ids(page) == [fav["id"], newest["id"], old["id"]]
    assert page["next_cursor"] is None
    # A new message is activity: the old session moves up among the non-favorites.
    new_message(client, old["id"])
    assert _ids(client.get("/sessions", params={"user_id": "u1"}).json()) == [fav["id"], old["id"], newest["id"]]


def test_list_filters_by_user_favorite_and_title(client: TestClient) -> None:
    mine = new_session(client, user_id="alice", title="Python tips")
    fav = new_session(client, user_id="alice", title="Rust 100% tips", is_favorite=True)
    new_session(client, user_id="bob", title="Python tips")
    assert set(_ids(client.get("/sessions", params={"user_id": "alice"}).json())) == {mine["id"], fav["id"]}
    assert _ids(client.get("/sessions", params={"user_id": "alice", "favorite": True}).json()) == [fav["id"]]
    assert _ids(client.get("/sessions", params={"user_id": "alice", "favorite": False}).json()) == [mine["id"]]
    assert _ids(client.get("/sessions", params={"user_id": "alice", "q": "PYTHON"}).json()) == [mine["id"]]
    # LIKE wildcards in q are literal text.
    assert _ids(client.get("/sessions", params={"q": "100%"}).json()) == [fav["id"]]
    assert _ids(client.get("/sessions", params={"q": "_"}).json()) == []
    assert len(client.get("/sessions").json()["items"]) == 3


def test_list_pages_with_keyset_cursor(client: TestClient) -> None:
    created = [new_session(client, title=f"s{i}", is_favorite=i % 3 == 0) for i in range(7)]
    expected = [s["id"] for s in created if s["is_favorite"]][::-1] + [
        s["id"] for s in created if not s["is_favorite"]
    ][::-1]
    seen: list[str] = []
    cursor = ""  # `?cursor=`, as a client with no cursor yet may send it: the first page
    for _ in range(10):
        page = client.get("/sessions", params={"user_id": "u1", "limit": 3, "cursor": cursor}).json()
        seen += _ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 201}, {"limit": "many"}, {"cursor": "not!valid"}, {"favorite": "perhaps"}],
)
def test_list_rejects_bad_parameters(client: TestClient, params: dict) -> None:
    response = client.get("/sessions", params=params)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"


@pytest.mark.parametrize("cursor", ["abc", "W10", "WzEsMiwzXQ", "WyJ4IiwieSIsInoiXQ"])
def test_list_rejects_forged_cursor(client: TestClient, cursor: str) -> None:
    response = client.get("/sessions", params={"cursor": cursor})
    assert response.status_code == 400
    assert "invalid cursor" in response.json()["detail"]


def test_create_with_client_id_is_idempotent(client: TestClient) -> None:
    session_id = random_id()
    first = client.post("/sessions", json={"id": session_id, "title": "Once"})
    again = client.post("/sessions", json={"id": session_id, "title": "Once"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert len(client.get("/sessions").json()["items"]) == 1
