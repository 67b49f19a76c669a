import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from persistence.models import Message
from tests.persistence.conftest import append, claim, new_answer, new_message, new_session, random_id


def _expire_lease(app: FastAPI, message_id: str) -> None:
    """Pretend the lease holder died a minute ago."""
    with Session(app.state.engine) as db, db.begin():
        db.execute(
            sa.update(Message)
            .where(Message.id == uuid.UUID(message_id))
            .values(lease_expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )


def test_append_at_current_length_grows_content(client: TestClient) -> None:
    answer = new_answer(client)
    claim(client, answer["id"])
    first = append(client, answer["id"], 0, "Bonjour, ")
    assert first.status_code == 200
    assert first.json()["length"] == 9
    # Offsets count characters, not bytes or UTF-16 units.
    second = append(client, answer["id"], 9, "ça va? 👋")
    assert second.json()["length"] == 17
    assert client.get(f"/messages/{answer['id']}").json()["content"] == "Bonjour, ça va? 👋"


@pytest.mark.parametrize("offset", [0, 4, 6, 100])
def test_append_at_wrong_offset_is_409_with_current_length(client: TestClient, offset: int) -> None:
    answer = new_answer(client)
    claim(client, answer["id"])
    append(client, answer["id"], 0, "Hello")
    response = append(client, answer["id"], offset, " world")
    assert response.status_code == 409
    assert response.json()["code"] == "offset_mismatch"
    assert response.json()["length"] == 5
    assert client.get(f"/messages/{answer['id']}").json()["content"] == "Hello"


def test_retried_append_never_duplicates(client: TestClient) -> None:
    answer = new_answer(client)
    claim(client, answer["id"])
    assert append(client, answer["id"], 0, "chunk").status_code == 200
    assert append(client, answer["id"], 0, "chunk").status_code == 409
    assert client.get(f"/messages/{answer['id']}").json()["content"] == "chunk"


def test_append_extends_the_lease_and_bumps_version(client: TestClient) -> None:
    answer = new_answer(client)
    claimed = claim(client, answer["id"], lease_seconds=5).json()
    result = append(client, answer["id"], 0, "x", lease_seconds=600).json()
    assert result["version"] == claimed["version"] + 1
    assert result["lease_expires_at"] > claimed["lease_expires_at"]
    expires = datetime.fromisoformat(result["lease_expires_at"])
    assert timedelta(seconds=590) < expires - datetime.now(UTC) <= timedelta(seconds=600)


def test_empty_append_is_a_heartbeat(client: TestClient) -> None:
    answer = new_answer(client)
    claim(client, answer["id"])
    result = append(client, answer["id"], 0, "")
    assert result.status_code == 200
    assert result.json()["length"] == 0


def test_append_to_complete_message_is_409(client: TestClient) -> None:
    session = new_session(client)
    message = new_message(client, session["id"], content="done")
    response = append(client, message["id"], 4, " more")
    assert response.status_code == 409
    assert response.json()["status"] == "complete"


def test_append_with_owner_requires_the_lease(client: TestClient) -> None:
    answer = new_answer(client)
    claim(client, answer["id"], owner="g1")
    assert append(client, answer["id"], 0, "a", owner="g1").status_code == 200
    response = append(client, answer["id"], 1, "b", owner="g2")
    assert response.status_code == 409
    assert response.json()["code"] == "lease_lost"
    assert response.json()["lease_owner"] == "g1"


def test_append_unknown_message_is_404(client: TestClient) -> None:
    assert append(client, random_id(), 0, "x").status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"offset": -1, "text": "x"},
        {"offset": 0},
        {"text": "x"},
        {"offset": "0", "text": 1},
        {"offset": 0.5, "text": "x"},
        {"offset": 10**30, "text": "x"},
    ],
)
def test_append_rejects_bad_bodies(client: TestClient, body: dict) -> None:
    answer = new_answer(client)
    assert client.post(f"/messages/{answer['id']}/append", json=body).status_code == 422


def test_claim_moves_pending_to_in_progress(client: TestClient) -> None:
    answer = new_answer(client)
    response = claim(client, answer["id"], owner="gateway-a", lease_seconds=30)
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["lease_owner"], body["attempts"]) == ("in_progress", "gateway-a", 1)
    assert body["version"] == answer["version"] + 1
    assert response.headers["etag"] == f'"{body["version"]}"'


def test_claim_of_live_lease_by_another_owner_is_409(client: TestClient) -> None:
    answer = new_answer(client)
    claim(client, answer["id"], owner="a")
    response = claim(client, answer["id"], owner="b")
    assert response.status_code == 409
    assert (response.json()["code"], response.json()["lease_owner"]) == ("lease_held", "a")


def test_reclaim_by_the_holder_renews_without_a_new_attempt(client: TestClient) -> None:
    answer = new_answer(client)
    first = claim(client, answer["id"], owner="a", lease_seconds=5).json()
    again = claim(client, answer["id"], owner="a", lease_seconds=60).json()
    assert again["attempts"] == first["attempts"] == 1
    assert again["lease_expires_at"] > first["lease_expires_at"]


def test_claim_of_expired_lease_takes_over_with_partial_content(client: TestClient, app: FastAPI) -> None:
    answer = new_answer(client)
    claim(client, answer["id"], owner="dead")
    append(client, answer["id"], 0, "half an answer")
    _expire_lease(app, answer["id"])
    body = claim(client, answer["id"], owner="rescuer").json()
    assert (body["lease_owner"], body["attempts"], body["content"]) == ("rescuer", 2, "half an answer")
    # The old holder's late writes are refused once it has lost the lease.
    assert append(client, answer["id"], 14, "!", owner="dead").status_code == 409


def test_claim_of_failed_message_resumes_it(client: TestClient) -> None:
    answer = new_answer(client)
    claim(client, answer["id"])
    append(client, answer["id"], 0, "partial")
    client.patch(f"/messages/{answer['id']}", json={"status": "failed", "error": "cancelled"})
    body = claim(client, answer["id"], owner="g2").json()
    assert (body["status"], body["error"], body["content"], body["attempts"]) == ("in_progress", None, "partial", 2)


def test_a_claim_with_if_match_takes_only_the_answer_as_its_claimer_saw_it(client: TestClient) -> None:
    """A scan for orphans saw it in progress; it was cancelled before the scan's claim: not generated again."""
    answer = claim(client, new_answer(client)["id"], owner="dead").json()
    seen = answer["version"]
    client.patch(f"/messages/{answer['id']}", json={"status": "failed", "error": "cancelled"})
    refused = client.post(f"/messages/{answer['id']}/claim", json={"owner": "g2"}, headers={"If-Match": f'"{seen}"'})
    assert (refused.status_code, refused.json()["version"]) == (412, seen + 1)
    stored = client.get(f"/messages/{answer['id']}").json()
    assert (stored["status"], stored["error"], stored["attempts"]) == ("failed", "cancelled", 1)
    now = stored["version"]
    taken = client.post(f"/messages/{answer['id']}/claim", json={"owner": "g2"}, headers={"If-Match": f'"{now}"'})
    assert (taken.status_code, taken.json()["status"], taken.json()["attempts"]) == (200, "in_progress", 2)


def test_claim_of_complete_or_user_message_is_409(client: TestClient) -> None:
    session = new_session(client)
    question = new_message(client, session["id"])
    assert claim(client, question["id"]).status_code == 409
    answer = new_message(client, session["id"], role="assistant", content="done", status="complete")
    response = claim(client, answer["id"])
    assert response.status_code == 409
    assert response.json()["status"] == "complete"
    assert claim(client, random_id()).status_code == 404


@pytest.mark.parametrize(
    "body", [{}, {"owner": ""}, {"owner": "a", "lease_seconds": 0}, {"owner": "a", "lease_seconds": 1e9}]
)
def test_claim_rejects_bad_bodies(client: TestClient, body: dict) -> None:
    answer = new_answer(client)
    assert client.post(f"/messages/{answer['id']}/claim", json=body).status_code == 422


def test_stale_lists_only_in_progress_with_expired_lease(client: TestClient, app: FastAPI) -> None:
    prompt = [{"role": "user", "content": "a long conversation"}]
    live, dead, pending = new_answer(client), new_answer(client, prompt=prompt), new_answer(client)
    claim(client, live["id"])
    claim(client, dead["id"])
    _expire_lease(app, dead["id"])
    stale = client.get("/messages/stale")
    assert stale.status_code == 200
    assert [m["id"] for m in stale.json()] == [dead["id"]]
    assert "prompt" not in stale.json()[0]  # left in the database: the claim returns it
    assert claim(client, dead["id"], owner="g2").json()["prompt"] == prompt
    assert pending["id"] not in {m["id"] for m in stale.json()}
    assert client.get("/messages/stale", params={"limit": 0}).status_code == 422


def test_stale_with_an_owner_also_lists_what_it_holds(client: TestClient, app: FastAPI) -> None:
    mine, theirs, dead = new_answer(client), new_answer(client), new_answer(client)
    claim(client, mine["id"], owner="g1")
    claim(client, theirs["id"], owner="g2")
    claim(client, dead["id"], owner="g3")
    _expire_lease(app, dead["id"])
    listed = {m["id"] for m in client.get("/messages/stale", params={"owner": "g1"}).json()}
    assert listed == {mine["id"], dead["id"]}
    assert client.get("/messages/stale", params={"owner": ""}).status_code == 422


def _claimed_answer(client: TestClient, owner: str = "g1") -> str:
    answer = new_answer(client)
    assert claim(client, answer["id"], owner).status_code == 200
    assert append(client, answer["id"], 0, "Partial ", owner=owner).status_code == 200
    return str(answer["id"])


def test_a_finishing_append_stores_the_last_text_and_the_outcome(client: TestClient) -> None:
    answer_id = _claimed_answer(client)
    finish = {"status": "complete", "finish_reason": "stop", "usage": {"total_tokens": 7}, "model": "m2"}
    response = append(client, answer_id, 8, "answer.", owner="g1", finish=finish)
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["length"]) == ("complete", 15)
    stored = client.get(f"/messages/{answer_id}").json()
    assert stored["content"] == "Partial answer."
    assert (stored["status"], stored["finish_reason"], stored["usage"], stored["model"]) == (
        "complete",
        "stop",
        {"total_tokens": 7},
        "m2",
    )
    assert (stored["lease_owner"], stored["lease_expires_at"]) == (None, None)


def test_a_failing_append_keeps_the_partial_text(client: TestClient) -> None:
    answer_id = _claimed_answer(client)
    response = append(client, answer_id, 8, "", owner="g1", finish={"status": "failed", "error": "upstream 500"})
    assert response.status_code == 200, response.text
    stored = client.get(f"/messages/{answer_id}").json()
    assert (stored["status"], stored["error"], stored["content"]) == ("failed", "upstream 500", "Partial ")


def test_a_retried_finishing_append_is_409_and_doubles_nothing(client: TestClient) -> None:
    answer_id = _claimed_answer(client)
    assert append(client, answer_id, 8, "done", owner="g1", finish={"status": "complete"}).status_code == 200
    again = append(client, answer_id, 8, "done", owner="g1", finish={"status": "complete"})
    assert again.status_code == 409
    assert (again.json()["status"], again.json()["length"]) == ("complete", 12)
    assert client.get(f"/messages/{answer_id}").json()["content"] == "Partial done"


def test_only_the_lease_holder_finishes_an_answer_in_progress(client: TestClient) -> None:
    answer_id = _claimed_answer(client)
    response = append(client, answer_id, 8, "x", owner="g2", finish={"status": "complete"})
    assert (response.status_code, response.json()["code"]) == (409, "lease_lost")
    pending = new_answer(client)
    response = append(client, pending["id"], 0, "x", finish={"status": "complete"})
    assert (response.status_code, response.json()["code"]) == (409, "illegal_transition")
    assert client.get(f"/messages/{pending['id']}").json()["status"] == "pending"
    response = append(client, answer_id, 8, "x", owner="g1", finish={"status": "in_progress"})
    assert response.status_code == 422
