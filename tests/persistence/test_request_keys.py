"""A turn's request key: the same request sent again (an OpenAI client's own retry) gets the first one's turn back,
and a turn whose inputs its client added to a session itself goes after them (migration 0011)."""

import hashlib
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.persistence.conftest import append, new_message, new_session, random_id
from tests.persistence.test_concurrency import _race


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _turn(request_key: str, **answer: Any) -> dict[str, Any]:
    """A new conversation's turn: new ids and a new session each time, as each of a client's retries asks."""
    return {
        "session": {"user_id": "u1", "title": "Lyon"},
        "inputs": [{"id": random_id(), "content": "What is Lyon famous for?"}],
        "answer": {"id": random_id(), "model": "m1", "request_key": request_key} | answer,
        "owner": "g1",
        "account": {"user_id": "u1"},
    }


def _sessions(client: TestClient | httpx.Client) -> list[str]:
    return [s["id"] for s in client.get("/sessions", params={"user_id": "u1", "limit": 100}).json()["items"]]


def _finish(client: TestClient, answer: dict[str, Any], status: str = "complete", error: str | None = None) -> None:
    finish = {"status": status} | ({"error": error} if error else {})
    response = append(client, answer["id"], 0, "Silk.", owner="g1", lease_seconds=30, finish=finish)
    assert response.status_code == 200, response.text


def test_the_same_request_again_gets_the_first_turn_and_stores_nothing(client: TestClient) -> None:
    key = _key("the same request again")
    first = client.post(f"/sessions/{random_id()}/turns", json=_turn(key))
    assert first.status_code == 201, first.text
    before = _sessions(client)
    again = client.post(f"/sessions/{random_id()}/turns", json=_turn(key))
    assert again.status_code == 200, again.text
    assert again.json()["answer"]["id"] == first.json()["answer"]["id"]
    assert [m["id"] for m in again.json()["inputs"]] == [m["id"] for m in first.json()["inputs"]]
    assert _sessions(client) == before  # not even an empty session
    _finish(client, first.json()["answer"])
    done = client.post(f"/sessions/{random_id()}/turns", json=_turn(key))  # complete, within the window
    assert (done.status_code, done.json()["answer"]["content"]) == (200, "Silk.")


def test_a_completed_answer_gives_its_key_up_after_the_window(client: TestClient) -> None:
    key = _key("asked again later")
    first = client.post(f"/sessions/{random_id()}/turns", json=_turn(key, retry_seconds=0)).json()
    _finish(client, first["answer"])
    later = client.post(f"/sessions/{random_id()}/turns", json=_turn(key, retry_seconds=0))
    assert later.status_code == 201, later.text  # a new question, in a session of its own
    assert later.json()["answer"]["session_id"] != first["answer"]["session_id"]
    # The key is the new answer's now: while it is generated, the same request attaches to it.
    retried = client.post(f"/sessions/{random_id()}/turns", json=_turn(key, retry_seconds=0))
    assert (retried.status_code, retried.json()["answer"]["id"]) == (200, later.json()["answer"]["id"])


def test_a_failed_answer_is_retried_whenever_and_a_cancelled_one_is_not(client: TestClient) -> None:
    failed_key, cancelled_key = _key("failed"), _key("cancelled")
    failed = client.post(f"/sessions/{random_id()}/turns", json=_turn(failed_key, retry_seconds=0)).json()
    _finish(client, failed["answer"], "failed", "upstream 500")
    again = client.post(f"/sessions/{random_id()}/turns", json=_turn(failed_key, retry_seconds=0))
    assert (again.status_code, again.json()["answer"]["id"]) == (200, failed["answer"]["id"])
    cancelled = client.post(f"/sessions/{random_id()}/turns", json=_turn(cancelled_key, retry_seconds=0)).json()
    _finish(client, cancelled["answer"], "failed", "cancelled")
    anew = client.post(f"/sessions/{random_id()}/turns", json=_turn(cancelled_key, retry_seconds=0))
    assert anew.status_code == 201, anew.text


def test_the_same_request_sent_together_stores_one_turn(live: httpx.Client, live_url: str) -> None:
    key = _key("sent together")
    before = set(_sessions(live))
    responses = _race(live_url, 6, lambda http, _: http.post(f"/sessions/{random_id()}/turns", json=_turn(key)))
    assert sorted(r.status_code for r in responses) == [200] * 5 + [201]
    assert len({r.json()["answer"]["id"] for r in responses}) == 1
    assert len(set(_sessions(live)) - before) == 1


def test_a_turn_goes_after_the_inputs_its_client_added_under_its_conversation_key(client: TestClient) -> None:
    """A client that adds its question to a conversation itself, then asks for the answer without naming it."""
    session = new_session(client, user_id="u1")
    key = _key("the conversation so far")
    question = new_message(client, session["id"], role="user", content="What is Lyon famous for?", conversation_key=key)
    named = _turn(_key("a request naming its own session"))
    named["answer"]["conversation_key"] = key
    own_session = random_id()
    stays = client.post(f"/sessions/{own_session}/turns", json=named)  # it named a session: it goes there
    assert (stays.status_code, stays.json()["answer"]["session_id"]) == (201, own_session)
    body = _turn(_key("its request")) | {"follows_added": True}
    body["answer"]["conversation_key"] = key
    path = f"/sessions/{random_id()}/turns"
    response = client.post(path, json=body)
    assert response.status_code == 201, response.text
    assert response.json()["answer"]["session_id"] == session["id"]
    stored = client.get(f"/sessions/{session['id']}/messages").json()["items"]
    assert [m["id"] for m in stored] == [question["id"], response.json()["answer"]["id"]]  # the question once
    # The same turn again (its gateway lost the reply): that answer, where it went, and no session left behind.
    before = _sessions(client)
    replayed = client.post(path, json=body)
    assert (replayed.status_code, replayed.json()["answer"]["id"]) == (200, response.json()["answer"]["id"])
    assert _sessions(client) == before
    # Once answered, the same key finds nothing more: the next turn with it opens its own session.
    other = _turn(_key("another request")) | {"follows_added": True}
    other["answer"]["conversation_key"] = key
    elsewhere = client.post(f"/sessions/{random_id()}/turns", json=other)
    assert elsewhere.status_code == 201
    assert elsewhere.json()["answer"]["session_id"] != session["id"]


def test_a_budgeted_retry_is_recorded_once_and_a_replay_of_the_turn_keeps_its_record(client: TestClient) -> None:
    key = _key("budgeted")
    body = _turn(key) | {"account": {"user_id": "u1", "reserve_tokens": 50, "tokens_per_day": 10_000}}
    session_id = random_id()
    first = client.post(f"/sessions/{session_id}/turns", json=body)
    assert first.status_code == 201, first.text
    retry = body | {"inputs": [{"id": random_id(), "content": "What is Lyon famous for?"}]}
    retry["answer"] = body["answer"] | {"id": random_id()}
    assert client.post(f"/sessions/{random_id()}/turns", json=retry).status_code == 200
    # The very same turn again (its gateway never heard the first reply): a replay, its record untouched.
    assert client.post(f"/sessions/{session_id}/turns", json=body).status_code == 200
    usage = {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}
    finish = {"status": "complete", "usage": usage}
    append(client, first.json()["answer"]["id"], 0, "Silk.", owner="g1", lease_seconds=30, finish=finish)
    assert client.get("/usage", params={"user_id": "u1"}).json()["total_tokens"] == 16


def test_a_retry_is_answered_when_the_first_request_spent_the_budget_and_reserves_nothing(client: TestClient) -> None:
    key = _key("the budget's last answer")
    account = {"user_id": "u1", "reserve_tokens": 100, "tokens_per_day": 100}
    first = client.post(f"/sessions/{random_id()}/turns", json=_turn(key) | {"account": account})
    assert first.status_code == 201, first.text
    for _ in range(3):  # the SDK's retries, while it is generated: the budget is spent, but this is paid for
        retry = client.post(f"/sessions/{random_id()}/turns", json=_turn(key) | {"account": account})
        assert (retry.status_code, retry.json()["answer"]["id"]) == (200, first.json()["answer"]["id"])
    report = client.get("/usage", params={"user_id": "u1"}).json()
    assert (report["rows"][0]["answers"], report["rows"][0]["pending_answers"]) == (1, 1)
    refused = client.post(f"/sessions/{random_id()}/turns", json=_turn(_key("another")) | {"account": account})
    assert refused.status_code == 409  # a new question is not
