"""POST /sessions/{id}/turns: a question and its answer stored at once, the answer already claimed."""

from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH, MAX_CACHED_STATEMENT_PARAMS
from sqlalchemy.dialects import postgresql

from persistence.services.turn_statements import turn_statement, whole_turn_statement
from shared.contract import MAX_TOOL_CALLS
from tests.persistence.conftest import append, new_answer, new_session, random_id
from tests.persistence.test_concurrency import _race


def turn_body(**fields: Any) -> dict[str, Any]:
    question = {"id": random_id(), "content": "What is Lyon famous for?"}
    return {"inputs": [question], "answer": {"id": random_id(), "model": "m1"}, "owner": "g1"} | fields


def test_a_turn_creates_the_session_and_stores_the_answer_claimed(client: TestClient) -> None:
    session_id = random_id()
    body = turn_body(session={"user_id": "u9", "title": "Lyon"})
    response = client.post(f"/sessions/{session_id}/turns", json=body)
    assert response.status_code == 201, response.text
    [question], answer = response.json()["inputs"], response.json()["answer"]
    assert (question["id"], question["role"], question["status"]) == (body["inputs"][0]["id"], "user", "complete")
    assert question["content"] == "What is Lyon famous for?"
    assert (answer["id"], answer["role"], answer["status"]) == (body["answer"]["id"], "assistant", "in_progress")
    assert (answer["lease_owner"], answer["attempts"], answer["model"], answer["content"]) == ("g1", 1, "m1", "")
    assert answer["lease_expires_at"] is not None
    session = client.get(f"/sessions/{session_id}").json()
    assert (session["user_id"], session["title"]) == ("u9", "Lyon")
    stored = client.get(f"/sessions/{session_id}/messages").json()["items"]
    assert [m["id"] for m in stored] == [question["id"], answer["id"]]  # the question first, whatever the ids


def test_a_turn_in_an_existing_session_keeps_it_and_marks_activity(client: TestClient) -> None:
    session = new_session(client, title="Kept")
    response = client.post(f"/sessions/{session['id']}/turns", json=turn_body(session={"title": "Other"}))
    assert response.status_code == 201, response.text
    after = client.get(f"/sessions/{session['id']}").json()
    assert after["title"] == "Kept"
    assert after["updated_at"] > session["updated_at"]
    response = client.post(f"/sessions/{session['id']}/turns", json=turn_body())
    assert response.status_code == 201, response.text


def test_a_turn_in_an_unknown_session_is_404_unless_it_creates_it(client: TestClient) -> None:
    response = client.post(f"/sessions/{random_id()}/turns", json=turn_body())
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_without_an_owner_the_answer_is_pending(client: TestClient) -> None:
    session = new_session(client)
    body = turn_body()
    del body["owner"], body["answer"]
    response = client.post(f"/sessions/{session['id']}/turns", json=body)
    assert response.status_code == 201, response.text
    answer = response.json()["answer"]
    assert (answer["status"], answer["lease_owner"], answer["attempts"]) == ("pending", None, 0)


def test_a_replayed_turn_returns_what_is_stored_now(client: TestClient) -> None:
    session_id = random_id()
    body = turn_body(session={})
    first = client.post(f"/sessions/{session_id}/turns", json=body)
    assert first.status_code == 201
    answer_id = body["answer"]["id"]
    assert append(client, answer_id, 0, "Silk.", owner="g1").status_code == 200
    again = client.post(f"/sessions/{session_id}/turns", json=body | {"owner": "g2"})
    assert again.status_code == 200, again.text
    answer = again.json()["answer"]
    assert (answer["content"], answer["lease_owner"], answer["attempts"]) == ("Silk.", "g1", 1)  # not re-claimed
    assert len(client.get(f"/sessions/{session_id}/messages").json()["items"]) == 2


def test_a_turn_is_sent_when_first_tried_though_stored_by_a_retry(client: TestClient) -> None:
    session_id, tried = random_id(), "2026-01-02T03:04:05.678900Z"
    body = turn_body(session={}, sent_at=tried)
    stored = client.post(f"/sessions/{session_id}/turns", json=body)
    assert stored.status_code == 201, stored.text
    answer = stored.json()["answer"]
    assert answer["sent_at"] == tried != answer["created_at"]  # crash recovery counts from when it was asked
    messages = client.get(f"/sessions/{session_id}/messages").json()["items"]
    assert [message["sent_at"] for message in messages] == [tried, tried]
    # Sent again by a client's retry (its gateway's clock now later): the same turn, as stored.
    again = client.post(f"/sessions/{session_id}/turns", json=body | {"sent_at": "2026-01-02T03:09:00Z"})
    assert (again.status_code, again.json()["answer"]["sent_at"]) == (200, tried)
    # A gateway whose clock is ahead: never later than when it was stored.
    ahead = client.post(f"/sessions/{random_id()}/turns", json=turn_body(session={}, sent_at="2999-01-01T00:00:00Z"))
    assert ahead.json()["answer"]["sent_at"] <= ahead.json()["answer"]["created_at"]


def test_a_replay_with_another_question_is_409_and_changes_nothing(client: TestClient) -> None:
    session_id = random_id()
    body = turn_body(session={})
    assert client.post(f"/sessions/{session_id}/turns", json=body).status_code == 201
    changed = body | {"inputs": [body["inputs"][0] | {"content": "Something else"}]}
    response = client.post(f"/sessions/{session_id}/turns", json=changed)
    assert response.status_code == 409
    assert response.json()["code"] == "id_conflict"
    contents = [m["content"] for m in client.get(f"/sessions/{session_id}/messages").json()["items"]]
    assert contents == ["What is Lyon famous for?", ""]


@pytest.mark.parametrize("change", [{"options": {"temperature": 1}}, {"prompt": [{"role": "user", "content": "b"}]}])
def test_a_replay_with_other_answer_options_or_prompt_is_409(client: TestClient, change: dict) -> None:
    session_id = random_id()
    body = turn_body(session={})
    body["answer"] |= {"options": {"temperature": 0.5}, "prompt": [{"role": "user", "content": "a"}]}
    assert client.post(f"/sessions/{session_id}/turns", json=body).status_code == 201
    assert client.post(f"/sessions/{session_id}/turns", json=body).status_code == 200
    response = client.post(f"/sessions/{session_id}/turns", json=body | {"answer": body["answer"] | change})
    assert response.status_code == 409
    assert response.json()["code"] == "id_conflict"
    assert client.get(f"/messages/{body['answer']['id']}").json()["options"] == {"temperature": 0.5}


def test_a_replay_after_the_answer_named_another_model_is_still_a_replay(client: TestClient) -> None:
    session_id = random_id()
    body = turn_body(session={})
    assert client.post(f"/sessions/{session_id}/turns", json=body).status_code == 201
    finish = {"status": "complete", "model": "m1-2026"}
    assert append(client, body["answer"]["id"], 0, "Silk.", owner="g1", finish=finish).status_code == 200
    again = client.post(f"/sessions/{session_id}/turns", json=body)
    assert again.status_code == 200, again.text
    assert (again.json()["answer"]["model"], again.json()["answer"]["status"]) == ("m1-2026", "complete")


def test_an_answer_id_taken_elsewhere_is_409_and_stores_nothing(client: TestClient) -> None:
    elsewhere = new_answer(client)
    session = new_session(client)
    body = turn_body(answer={"id": elsewhere["id"]})
    response = client.post(f"/sessions/{session['id']}/turns", json=body)
    assert response.status_code == 409
    assert client.get(f"/sessions/{session['id']}/messages").json()["items"] == []
    assert client.get(f"/messages/{body['inputs'][0]['id']}").status_code == 404


def test_a_stored_question_with_a_new_answer_id_is_409_and_stores_nothing(client: TestClient) -> None:
    session_id = random_id()
    body = turn_body(session={})
    assert client.post(f"/sessions/{session_id}/turns", json=body).status_code == 201
    response = client.post(f"/sessions/{session_id}/turns", json=body | {"answer": {"id": random_id()}})
    assert response.status_code == 409
    assert response.json()["code"] == "id_conflict"
    assert len(client.get(f"/sessions/{session_id}/messages").json()["items"]) == 2


def test_turns_racing_to_create_one_session_all_land_in_it(live: httpx.Client, live_url: str) -> None:
    session_id = random_id()
    responses = _race(
        live_url, 8, lambda http, i: http.post(f"/sessions/{session_id}/turns", json=turn_body(session={}))
    )
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    stored = live.get(f"/sessions/{session_id}/messages", params={"limit": 100}).json()["items"]
    assert len(stored) == 16
    assert live.get("/sessions").json()["items"][0]["id"] == session_id


def test_bad_turns_are_422(client: TestClient) -> None:
    session = new_session(client)
    bodies: list[dict[str, Any]] = [
        {},
        {"inputs": []},
        {"inputs": [{"content": 1}]},
        {"question": {"content": "the field before inputs"}},
        turn_body(inputs=[{"role": "tool", "content": "18°C"}]),  # which call it answers is not said
        turn_body(owner=""),
        turn_body(lease_seconds=0),
        turn_body(session={"title": ""}),
        turn_body(inputs=[{"content": "x", "role": "assistant"}]),
    ]
    for body in bodies:
        response = client.post(f"/sessions/{session['id']}/turns", json=body)
        assert response.status_code == 422, (body, response.text)
    assert client.get(f"/sessions/{session['id']}/messages").json()["items"] == []


def test_the_answer_keeps_its_generation_options(client: TestClient) -> None:
    session = new_session(client)
    options = {"temperature": 0.2, "max_tokens": 300, "stop": ["\n\n"]}
    body = turn_body(answer={"id": random_id(), "options": options})
    response = client.post(f"/sessions/{session['id']}/turns", json=body)
    assert response.status_code == 201, response.text
    assert (response.json()["answer"]["options"], response.json()["inputs"][0]["options"]) == (options, None)
    assert client.get(f"/messages/{body['answer']['id']}").json()["options"] == options
    without = client.post(f"/sessions/{session['id']}/turns", json=turn_body()).json()["answer"]
    assert without["options"] is None


def test_a_clients_own_prompt_is_kept_with_the_answer_for_whoever_continues_it(client: TestClient) -> None:
    session = new_session(client)
    prompt = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "What is Lyon?"}]
    body = turn_body(answer={"id": random_id(), "prompt": prompt})
    response = client.post(f"/sessions/{session['id']}/turns", json=body)
    assert response.status_code == 201, response.text
    answer_id = body["answer"]["id"]
    assert client.get(f"/messages/{answer_id}").json()["prompt"] == prompt
    assert client.get(f"/sessions/{session['id']}/messages/last").json()["prompt"] == prompt
    # Lists leave it out: it can be as long as the conversation, and only a generator needs it.
    page = client.get(f"/sessions/{session['id']}/messages").json()["items"]
    assert [("prompt" in m) for m in page] == [False, False]
    assert "prompt" not in response.json()["answer"]  # the client sent it
    # Whoever takes the answer over gets it with the claim.
    client.patch(f"/messages/{answer_id}", json={"status": "failed", "error": "gateway died"})
    claimed = client.post(f"/messages/{answer_id}/claim", json={"owner": "g2"})
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["prompt"] == prompt
    assert client.post(f"/sessions/{session['id']}/turns", json=turn_body(answer={"prompt": []})).status_code == 422


def test_an_agents_round_stores_the_tool_results_then_the_answer_and_replays_as_one(client: TestClient) -> None:
    session = new_session(client)
    results = [
        {"id": random_id(), "role": "tool", "content": "18°C", "tool_call_id": "call_1", "name": "get_weather"},
        {"id": random_id(), "role": "tool", "content": "14:05", "tool_call_id": "call_2", "name": "get_time"},
    ]
    body = turn_body(inputs=results)
    first = client.post(f"/sessions/{session['id']}/turns", json=body)
    assert first.status_code == 201, first.text
    replay = client.post(f"/sessions/{session['id']}/turns", json=body)
    assert replay.status_code == 200, replay.text
    assert [m["id"] for m in replay.json()["inputs"]] == [r["id"] for r in results]
    listed = client.get(f"/sessions/{session['id']}/messages").json()["items"]
    stored = [(m["role"], m["tool_call_id"], m["content"]) for m in listed]
    assert stored == [("tool", "call_1", "18°C"), ("tool", "call_2", "14:05"), ("assistant", None, "")]
    other = body | {"inputs": [results[0], results[1] | {"content": "15:00"}]}
    conflict = client.post(f"/sessions/{session['id']}/turns", json=other)
    assert conflict.status_code == 409


def test_an_answer_keeps_what_a_responses_client_asked_and_can_be_deleted_alone(client: TestClient) -> None:
    session = new_session(client)
    asked = {"background": True, "store": True, "metadata": {"ticket": "42"}, "instructions": "Be brief."}
    body = turn_body(answer={"id": random_id(), "response": asked})
    turn = client.post(f"/sessions/{session['id']}/turns", json=body).json()
    answer_id = turn["answer"]["id"]
    assert client.get(f"/messages/{answer_id}").json()["response"] == asked
    assert "response" not in client.get(f"/sessions/{session['id']}/messages").json()["items"][1]
    assert client.delete(f"/messages/{answer_id}").status_code == 204
    assert client.get(f"/messages/{answer_id}").status_code == 404
    assert client.delete(f"/messages/{answer_id}").status_code == 404
    assert [m["role"] for m in client.get(f"/sessions/{session['id']}/messages").json()["items"]] == ["user"]


@pytest.mark.parametrize("inputs", [1, MAX_TOOL_CALLS])
@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("opens_session", [False, True])
def test_a_turn_s_statement_stays_in_psycopg_s_statement_cache(
    inputs: int, opens_session: bool, exclusive: bool
) -> None:
    """psycopg parses a statement anew on every execution once it has more than 50 parameters or 4,096 bytes:
    before the first word of every answer. The rows are one parameter, so no column added to messages, and no
    number of tool results, pushes a turn over."""
    statement = turn_statement("postgresql", inputs, opens_session=opens_session, exclusive=exclusive)
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())
    assert len(str(compiled).encode()) <= MAX_CACHED_STATEMENT_LENGTH
    assert len(compiled.params) <= MAX_CACHED_STATEMENT_PARAMS


@pytest.mark.parametrize("unless_added", [False, True])
@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("opens_session", [False, True])
def test_a_whole_turn_s_statement_stays_in_psycopg_s_statement_cache(
    opens_session: bool, exclusive: bool, unless_added: bool
) -> None:
    statement = whole_turn_statement(opens_session=opens_session, exclusive=exclusive, unless_added=unless_added)
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())
    assert len(str(compiled).encode()) <= MAX_CACHED_STATEMENT_LENGTH
    assert len(compiled.params) <= MAX_CACHED_STATEMENT_PARAMS


def test_an_openai_clients_new_chat_is_one_statement_on_postgresql(client: TestClient, app: FastAPI) -> None:
    """What a gateway sends for a /v1 request naming no session: its session, its question and answer, its usage
    record, and the lookup of inputs its client may have added under its key (none), in one round trip."""
    body = turn_body(session={"user_id": "u9", "title": "Lyon"}, account={"user_id": "u9"}, follows_added=True)
    body["answer"] |= {"conversation_key": "a" * 64, "request_key": "b" * 64}
    sent: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        sent.append(statement)

    sa.event.listen(app.state.engine, "before_cursor_execute", record)
    try:
        response = client.post(f"/sessions/{random_id()}/turns", json=body)
    finally:
        sa.event.remove(app.state.engine, "before_cursor_execute", record)
    assert response.status_code == 201, response.text
    if app.state.engine.dialect.name == "postgresql":
        assert len(sent) == 1, "\n\n".join(sent)
    usage = client.get("/usage", params={"user_id": "u9"}).json()
    assert [day["answers"] for day in usage["by_day"]] == [1]  # its record, reserved
    assert client.get(f"/sessions/{response.json()['answer']['session_id']}").json()["user_id"] == "u9"
