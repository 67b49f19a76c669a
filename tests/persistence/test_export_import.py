import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.persistence.conftest import append, claim, new_answer, new_message, new_session, random_id

CONTEXT = {"documents": [{"text": "Lyon is in France."}]}


def _chat_with_everything(client: TestClient) -> dict[str, Any]:
    session = new_session(client, title="Lyon", metadata={"tags": ["travel"]}, is_favorite=True)
    new_message(client, session["id"], role="system", content="Be brief.")
    new_message(client, session["id"], content="Où est Lyon ? 🗺", context=CONTEXT)
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Où est Lyon ?"}]
    done = new_message(client, session["id"], role="assistant", content="", options={"temperature": 0.2}, prompt=prompt)
    claim(client, done["id"])
    append(client, done["id"], 0, "In France.")
    client.patch(
        f"/messages/{done['id']}",
        json={"status": "complete", "usage": {"prompt_tokens": 9}, "model": "m", "finish_reason": "stop"},
    )
    client.patch(f"/messages/{done['id']}", json={"rating": True})
    new_message(client, session["id"], content="And Paris?")
    failed = new_message(client, session["id"], role="assistant", content="")
    claim(client, failed["id"])
    append(client, failed["id"], 0, "Paris is")
    client.patch(f"/messages/{failed['id']}", json={"status": "failed", "error": "cancelled"})
    return session


def _export(client: TestClient, session_id: str) -> dict[str, Any]:
    response = client.get(f"/sessions/{session_id}/export")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def _without_ids(document: dict[str, Any]) -> dict[str, Any]:
    stripped = copy.deepcopy(document)
    stripped["session"].pop("id")
    for message in stripped["messages"]:
        message.pop("id")
    return stripped


def test_export_is_a_complete_versioned_document(client: TestClient) -> None:
    session = _chat_with_everything(client)
    document = _export(client, session["id"])
    assert (document["format"], document["version"]) == ("durable-chat/session", 2)
    assert document["session"]["metadata"] == {"tags": ["travel"]}
    assert [m["role"] for m in document["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    answer = document["messages"][2]
    assert (answer["status"], answer["rating"], answer["usage"], answer["content"]) == (
        "complete",
        True,
        {"prompt_tokens": 9},
        "In France.",
    )
    assert document["messages"][1]["context"] == CONTEXT
    assert document["messages"][2]["options"] == {"temperature": 0.2}
    assert document["messages"][2]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert (document["messages"][4]["status"], document["messages"][4]["error"]) == ("failed", "cancelled")


def test_round_trip_keeps_ids_when_they_are_free(client: TestClient) -> None:
    session = _chat_with_everything(client)
    document = _export(client, session["id"])
    client.delete(f"/sessions/{session['id']}")
    response = client.post("/sessions/import", json=document)
    assert response.status_code == 201
    assert (response.json()["remapped"], response.json()["messages"]) == (False, 5)
    assert _export(client, session["id"]) == document


def test_importing_again_gives_new_ids_and_the_same_document(client: TestClient) -> None:
    session = _chat_with_everything(client)
    document = _export(client, session["id"])
    imported = client.post("/sessions/import", json=document).json()
    assert imported["remapped"] is True
    new_id = imported["session"]["id"]
    assert new_id != session["id"]
    again = _export(client, new_id)
    assert _without_ids(again) == _without_ids(document)
    assert {m["id"] for m in again["messages"]}.isdisjoint({m["id"] for m in document["messages"]})
    assert _export(client, session["id"]) == document  # the original is untouched


def test_a_taken_message_id_alone_is_replaced(client: TestClient) -> None:
    session = _chat_with_everything(client)
    document = _export(client, session["id"])
    document["session"]["id"] = random_id()
    imported = client.post("/sessions/import", json=document).json()
    assert imported["remapped"] is True
    assert len(_export(client, imported["session"]["id"])["messages"]) == 5


def test_an_answer_imported_mid_generation_comes_in_failed_and_is_never_generated_by_itself(
    client: TestClient,
) -> None:
    """Crash recovery would generate it, with nobody's budget and no ledger row: its user resumes it instead."""
    answer = new_answer(client)
    claim(client, answer["id"])
    append(client, answer["id"], 0, "half")
    pending = new_message(client, answer["session_id"], role="assistant", content="")
    document = _export(client, answer["session_id"])
    client.delete(f"/sessions/{answer['session_id']}")
    client.post("/sessions/import", json=document)
    assert answer["id"] not in {m["id"] for m in client.get("/messages/stale").json()}
    imported = client.get(f"/messages/{answer['id']}").json()
    assert (imported["status"], imported["content"], imported["lease_expires_at"]) == ("failed", "half", None)
    assert imported["error"].startswith("imported unfinished")
    assert client.get(f"/messages/{pending['id']}").json()["status"] == "failed"


def test_markdown_export_reads_like_the_chat(client: TestClient) -> None:
    session = _chat_with_everything(client)
    response = client.get(f"/sessions/{session['id']}/export", params={"format": "md"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/markdown")
    text = response.text
    assert text.startswith("# Lyon\n")
    assert "## User" in text
    assert "Où est Lyon ? 🗺" in text
    assert "(failed: cancelled)" in text
    assert "Paris is" in text
    assert client.get(f"/sessions/{session['id']}/export", params={"format": "pdf"}).status_code == 422
    assert client.get(f"/sessions/{random_id()}/export").status_code == 404


@pytest.mark.parametrize(
    ("damage", "where"),
    [
        (lambda d: d.update(version=3), "version"),
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d.pop("session"), "session"),
        (lambda d: d["messages"][3].update(role="robot"), "messages.3.role"),
        (lambda d: d["messages"][4].update(status="done"), "messages.4.status"),
        (lambda d: d["messages"][1].update(content="a\x00b"), "body"),
        (lambda d: d["messages"][2].update(attempts=2**31), "messages.2.attempts"),
        (lambda d: d["messages"][1].update(created_at="0001-01-01T00:00:00+01:00"), "messages.1.created_at"),
        (lambda d: d["messages"][2].update(id=d["messages"][0]["id"]), "appears twice"),
        (lambda d: d["messages"][0].pop("created_at"), "messages.0.created_at"),
    ],
)
def test_bad_documents_are_422_naming_the_first_problem_and_import_nothing(
    client: TestClient, damage: Any, where: str
) -> None:
    session = _chat_with_everything(client)
    document = _export(client, session["id"])
    client.delete(f"/sessions/{session['id']}")
    damage(document)
    response = client.post("/sessions/import", json=document)
    assert response.status_code == 422, response.text
    assert where in response.json()["detail"]
    assert client.get("/sessions").json()["items"] == []
