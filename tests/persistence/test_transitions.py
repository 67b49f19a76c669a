"""Every pair of statuses through PATCH: the legal ones apply, the others are 409 with the current status."""

import itertools

import pytest
from fastapi.testclient import TestClient

from tests.persistence.conftest import claim, new_answer

STATUSES = ["pending", "in_progress", "complete", "failed"]
LEGAL = {
    ("pending", "in_progress"),
    ("pending", "failed"),
    ("in_progress", "complete"),
    ("in_progress", "failed"),
    ("in_progress", "pending"),
    ("failed", "in_progress"),
    ("failed", "pending"),
}


def _answer_in(client: TestClient, status: str) -> dict:
    answer = new_answer(client)
    if status in ("in_progress", "complete", "failed"):
        assert claim(client, answer["id"]).status_code == 200
    if status in ("complete", "failed"):
        assert client.patch(f"/messages/{answer['id']}", json={"status": status}).status_code == 200
    stored: dict = client.get(f"/messages/{answer['id']}").json()
    return stored


@pytest.mark.parametrize(
    ("current", "target"), [pair for pair in itertools.product(STATUSES, STATUSES) if pair[0] != pair[1]]
)
def test_transition(client: TestClient, current: str, target: str) -> None:
    answer = _answer_in(client, current)
    assert answer["status"] == current
    response = client.patch(f"/messages/{answer['id']}", json={"status": target})
    if (current, target) in LEGAL:
        assert response.status_code == 200, response.text
        assert response.json()["status"] == target
        assert response.json()["version"] == answer["version"] + 1
    else:
        assert response.status_code == 409, response.text
        assert response.json()["status"] == current
        assert client.get(f"/messages/{answer['id']}").json() == answer


@pytest.mark.parametrize("status", STATUSES)
def test_same_status_is_not_a_transition(client: TestClient, status: str) -> None:
    answer = _answer_in(client, status)
    response = client.patch(f"/messages/{answer['id']}", json={"status": status, "rating": True})
    assert response.status_code == 200
    assert response.json()["status"] == status


def test_leaving_in_progress_releases_the_lease(client: TestClient) -> None:
    answer = _answer_in(client, "in_progress")
    assert answer["lease_owner"] == "g1"
    body = client.patch(f"/messages/{answer['id']}", json={"status": "failed", "error": "upstream 500"}).json()
    assert (body["lease_owner"], body["lease_expires_at"], body["error"]) == (None, None, "upstream 500")


def test_setting_in_progress_by_hand_leaves_it_recoverable(client: TestClient) -> None:
    answer = new_answer(client)
    body = client.patch(f"/messages/{answer['id']}", json={"status": "in_progress"}).json()
    assert body["lease_owner"] is None
    assert body["lease_expires_at"] is not None
