"""User keys, limits, requests made on behalf of a user, and the usage ledger with its budgets."""

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from shared.identity import ON_BEHALF_OF, RESERVED_USERS
from tests.persistence.conftest import new_session, random_id


def _turn(client: TestClient | httpx.Client, session_id: str, **extra: Any) -> Any:
    body = {"inputs": [{"content": "hi"}], "owner": "gw", "session": {"user_id": "alice", "title": "t"}} | extra
    return client.post(f"/sessions/{session_id}/turns", json=body)


def _finish(client: TestClient, answer_id: str, text: str, usage: dict[str, int] | None = None) -> None:
    finish: dict[str, Any] = {"status": "complete"} | ({"usage": usage} if usage else {})
    response = client.post(f"/messages/{answer_id}/append", json={"offset": 0, "text": text, "finish": finish})
    assert response.status_code == 200, response.text


def test_a_key_is_shown_once_stored_hashed_and_identifies_its_user(client: TestClient) -> None:
    created = client.post("/keys", json={"user_id": "alice", "name": "laptop", "limits": {"tokens_per_day": 100}})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert key.startswith("dck_")
    assert created.json()["prefix"] == key[:12]
    listed = client.get("/keys", params={"user_id": "alice"}).json()
    assert [item["name"] for item in listed] == ["laptop"]
    assert "key" not in listed[0]
    assert key not in str(listed)
    client.put("/users/alice/limits", json={"requests_per_minute": 5, "tokens_per_day": 999})
    identity = client.post("/keys/identify", json={"key": key})
    assert identity.status_code == 200
    # The key's own limit first, its user's for the rest.
    assert identity.json()["user_id"] == "alice"
    assert identity.json()["limits"] == {"requests_per_minute": 5, "tokens_per_day": 100, "tokens_per_month": None}
    assert client.get("/keys", params={"user_id": "alice"}).json()[0]["last_used_at"] is not None


def test_unknown_revoked_and_expired_keys_are_refused(client: TestClient) -> None:
    assert client.post("/keys/identify", json={"key": "dck_made-up"}).status_code == 401
    key = client.post("/keys", json={"user_id": "bob"}).json()
    assert client.delete(f"/keys/{key['id']}").json()["revoked_at"] is not None
    assert client.post("/keys/identify", json={"key": key["key"]}).status_code == 401
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    expired = client.post("/keys", json={"user_id": "bob", "expires_at": past}).json()
    refused = client.post("/keys/identify", json={"key": expired["key"]})
    assert refused.status_code == 401
    assert refused.json()["code"] == "key_expired"
    assert client.delete(f"/keys/{random_id()}").status_code == 404


def test_requests_on_behalf_of_a_user_see_only_their_own(client: TestClient) -> None:
    alices = new_session(client, user_id="alice")["id"]
    bobs = new_session(client, user_id="bob", title="Bob's")["id"]
    turn = _turn(client, bobs, session=None).json()
    as_alice = {ON_BEHALF_OF: "alice"}
    for method, path in (
        ("GET", f"/sessions/{bobs}"),
        ("GET", f"/sessions/{bobs}/messages"),
        ("GET", f"/sessions/{bobs}/messages/last"),
        ("GET", f"/sessions/{bobs}/export"),
        ("PUT", f"/sessions/{bobs}"),
        ("PATCH", f"/sessions/{bobs}/favorite"),
        ("DELETE", f"/sessions/{bobs}"),
        ("GET", f"/messages/{turn['answer']['id']}"),
        ("GET", f"/messages/{turn['answer']['id']}/text"),
        ("PATCH", f"/messages/{turn['answer']['id']}"),
        ("POST", f"/sessions/{bobs}/turns"),
    ):
        body: dict[str, Any] | None = {"title": "mine"} if method == "PUT" else {} if method == "PATCH" else None
        if path.endswith("/turns"):
            body = {"inputs": [{"content": "hi"}]}
        response = client.request(method, path, headers=as_alice, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"].endswith("not found")
    assert client.get(f"/sessions/{bobs}").json()["title"] == "Bob's"
    assert len(client.get(f"/sessions/{bobs}/messages").json()["items"]) == 2
    listed = client.get("/sessions", headers=as_alice, params={"user_id": "bob"}).json()["items"]
    assert [item["id"] for item in listed] == [alices]
    assert client.get(f"/sessions/{alices}", headers=as_alice).status_code == 200


def test_every_answer_is_recorded_for_its_user_and_outlives_its_chat(client: TestClient) -> None:
    account = {"user_id": "alice", "reserve_tokens": 50}
    first = _turn(client, random_id(), account=account, answer={"model": "m1"}).json()["answer"]["id"]
    second = _turn(client, random_id(), account=account, answer={"model": "m2"}).json()["answer"]["id"]
    _finish(client, first, "x" * 40, {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16})
    _finish(client, second, "y" * 41)  # no figures from the upstream: 41 characters, 11 tokens estimated
    report = client.get("/usage", params={"user_id": "alice"}).json()
    rows = {row["model"]: row for row in report["rows"]}
    assert rows["m1"]["total_tokens"] == 16
    assert rows["m1"]["estimated_tokens"] == 0
    assert rows["m2"]["total_tokens"] == 11
    assert rows["m2"]["estimated_tokens"] == 11
    assert report["total_tokens"] == 27
    for session in client.get("/sessions").json()["items"]:
        client.delete(f"/sessions/{session['id']}")
    assert client.get("/usage", params={"user_id": "alice"}).json()["total_tokens"] == 27
    assert client.get("/usage", params={"user_id": "bob"}).json()["rows"] == []


def test_a_spent_budget_refuses_the_turn_and_stores_nothing(client: TestClient) -> None:
    account = {"user_id": "carol", "reserve_tokens": 10, "tokens_per_day": 20}
    answer = _turn(client, random_id(), account=account).json()["answer"]["id"]
    _finish(client, answer, "z" * 80)  # 20 tokens: the day's budget
    session_id = random_id()
    refused = _turn(client, session_id, account=account)
    assert refused.status_code == 409
    body = refused.json()
    assert body["code"] == "budget_exceeded"
    assert body["period"] == "day"
    assert body["retry_after"] >= 1
    assert client.get(f"/sessions/{session_id}").status_code == 404
    # Another user's budget is their own.
    assert _turn(client, random_id(), account=account | {"user_id": "dave"}).status_code == 201


def test_concurrent_starts_pass_a_budget_by_at_most_one_answer(live: httpx.Client) -> None:
    account = {"user_id": "erin", "reserve_tokens": 100, "tokens_per_month": 450}
    statuses: list[int] = []

    def start() -> None:
        statuses.append(_turn(live, random_id(), account=account).status_code)

    threads = [threading.Thread(target=start) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Each admitted start reserves 100: admitted while under 450, so five, whatever the interleaving.
    assert sorted(statuses) == [201] * 5 + [409] * 11


def test_usage_ranges_are_checked(client: TestClient) -> None:
    assert client.get("/usage", params={"since": "2026-02-01", "until": "2026-01-01"}).status_code == 400
    assert client.get("/usage", params={"since": "2020-01-01", "until": "2026-01-01"}).status_code == 400
    assert client.get("/usage", params={"until": "9999-12-31"}).status_code == 200


@pytest.mark.parametrize("user_id", ["", "a" * 256])
def test_limits_need_a_valid_user(client: TestClient, user_id: str) -> None:
    assert client.put(f"/users/{user_id}/limits", json={}).status_code in (404, 405, 422)


def test_limits_of_users_named_with_slashes_and_totals_without_a_total(client: TestClient) -> None:
    assert client.put("/users/org%2Falice/limits", json={"tokens_per_day": 9}).json()["user_id"] == "org/alice"
    assert client.get("/users/org%2Falice/limits").json()["limits"]["tokens_per_day"] == 9
    answer = _turn(client, random_id(), account={"user_id": "frank"}).json()["answer"]["id"]
    _finish(client, answer, "text", {"prompt_tokens": 3, "completion_tokens": 4})
    assert client.get("/usage", params={"user_id": "frank"}).json()["total_tokens"] == 7


@pytest.mark.parametrize("account", [{}, {"account": {"user_id": "alice"}}])  # with one: in one statement
def test_a_session_id_taken_by_another_user_stores_no_turn(client: TestClient, account: dict[str, Any]) -> None:
    session_id = random_id()
    assert _turn(client, session_id, session={"user_id": "bob", "title": "bob's"}).status_code == 201
    refused = _turn(client, session_id, session={"user_id": "alice", "title": "alice's", "exclusive": True}, **account)
    assert refused.status_code == 404
    assert refused.json()["detail"] == f"session {session_id} not found"
    assert len(client.get(f"/sessions/{session_id}/messages").json()["items"]) == 2
    assert client.get("/usage", params={"user_id": "alice"}).json()["by_day"] == []  # no record either
    # Its own user's next turn goes in.
    assert _turn(client, session_id, session={"user_id": "bob", "title": "t", "exclusive": True}).status_code == 201


def test_a_resumed_answer_is_checked_and_counted_again(client: TestClient) -> None:
    account = {"user_id": "gina", "reserve_tokens": 5, "tokens_per_day": 30}
    answer = _turn(client, random_id(), account=account).json()["answer"]["id"]
    assert client.patch(f"/messages/{answer}", json={"status": "failed", "error": "cancelled"}).status_code == 200
    assert client.post(f"/usage/{answer}/reserve", json=account).status_code == 204
    assert client.get("/usage", params={"user_id": "gina"}).json()["rows"][0]["pending_answers"] == 1
    claimed = client.post(f"/messages/{answer}/claim", json={"owner": "gw"}).json()
    _finish(client, answer, "w" * 40, {"prompt_tokens": 10, "completion_tokens": 10})
    assert claimed["status"] == "in_progress"
    report = client.get("/usage", params={"user_id": "gina"}).json()
    assert (report["total_tokens"], report["rows"][0]["pending_answers"]) == (20, 0)
    _finish_again = client.post(
        f"/messages/{answer}/append", json={"offset": 40, "text": "", "finish": {"status": "complete"}}
    )
    assert _finish_again.status_code == 409  # ended once, counted once
    assert client.get("/usage", params={"user_id": "gina"}).json()["total_tokens"] == 20
    client.put("/users/gina/limits", json={})
    assert client.post(f"/usage/{answer}/reserve", json=account | {"tokens_per_day": 20}).status_code == 409


def test_deleting_a_chat_releases_what_its_running_answers_reserved(client: TestClient) -> None:
    account = {"user_id": "hal", "reserve_tokens": 1000, "tokens_per_day": 1500}
    session_id = random_id()
    _turn(client, session_id, account=account)
    assert _turn(client, random_id(), account=account).status_code == 201
    assert _turn(client, random_id(), account=account).status_code == 409  # 2000 reserved
    assert client.delete(f"/sessions/{session_id}").status_code == 204
    assert _turn(client, random_id(), account=account).status_code == 201


def test_a_user_key_refused_says_so_in_its_own_code(client: TestClient) -> None:
    refused = client.post("/keys/identify", json={"key": "dck_unknown"})
    assert (refused.status_code, refused.json()["code"]) == (401, "invalid_user_key")


def test_on_behalf_of_is_percent_encoded(client: TestClient) -> None:
    new_session(client, user_id=" josé")
    new_session(client, user_id="josé")
    listed = client.get("/sessions", headers={ON_BEHALF_OF: "%20jos%C3%A9"}).json()["items"]
    assert [item["user_id"] for item in listed] == [" josé"]


@pytest.mark.parametrize("user_id", sorted(RESERVED_USERS))
def test_reserved_user_ids_get_no_key_and_no_limits(client: TestClient, user_id: str) -> None:
    created = client.post("/keys", json={"user_id": user_id})
    assert created.status_code == 422, created.text
    assert created.json()["errors"][0]["type"] == "reserved_user_id"
    assert client.put(f"/users/{user_id}/limits", json={"tokens_per_day": 9}).status_code == 422
    assert client.get("/keys", params={"user_id": user_id}).json() == []


def test_on_behalf_of_bounds_the_user_id_not_its_encoding(client: TestClient) -> None:
    longest = "é" * 255  # 1530 characters percent-encoded
    new_session(client, user_id=longest)
    listed = client.get("/sessions", headers={ON_BEHALF_OF: quote(longest, safe="")})
    assert listed.status_code == 200, listed.text
    assert [item["user_id"] for item in listed.json()["items"]] == [longest]
    refused = client.get("/sessions", headers={ON_BEHALF_OF: quote(longest + "é", safe="")})
    assert refused.status_code == 400
    # Said in the caller's terms: the gateway relays it to clients that never sent this header.
    assert refused.json()["detail"] == "the user id must be 1 to 255 characters long, none a control character"
