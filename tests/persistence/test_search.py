"""Search: the same results, in the same order, on SQLite (FTS5) and PostgreSQL (full-text search)."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.persistence.conftest import append, claim, new_answer, new_message, new_session


def _search(client: TestClient, q: str, **params: Any) -> dict:
    response = client.get("/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    page: dict = response.json()
    return page


def test_finds_messages_and_titles_with_highlighted_snippets(client: TestClient) -> None:
    lyon = new_session(client, user_id="alice", title="Weekend in Lyon")
    new_message(client, lyon["id"], content="Where should I eat in Lyon? Something with quenelles.")
    new_message(client, lyon["id"], role="assistant", content="Try a bouchon near Saint-Jean.", status="complete")
    paris = new_session(client, user_id="alice", title="Paris museums")
    new_message(client, paris["id"], content="Which museums in Paris open late?")

    page = _search(client, "lyon")
    kinds = {(hit["kind"], hit["session_id"]) for hit in page["items"]}
    assert kinds == {("session", lyon["id"]), ("message", lyon["id"])}
    message_hit = next(hit for hit in page["items"] if hit["kind"] == "message")
    assert message_hit["role"] == "user"
    assert message_hit["title"] == "Weekend in Lyon"
    assert "**Lyon**" in message_hit["snippet"]
    title_hit = next(hit for hit in page["items"] if hit["kind"] == "session")
    assert title_hit["snippet"] == "Weekend in **Lyon**"
    assert title_hit["message_id"] is None


def test_every_word_must_match_case_insensitively(client: TestClient) -> None:
    session = new_session(client, title="Notes")
    both = new_message(client, session["id"], content="The QUICK brown fox")
    new_message(client, session["id"], content="A quick reply")
    hits = _search(client, "quick FOX")["items"]
    assert [hit["message_id"] for hit in hits] == [both["id"]]
    assert _search(client, "quick fox!!")["items"] == hits  # punctuation is not a word
    assert _search(client, "nothing-like-this")["items"] == []


def test_more_relevant_first_then_newest(client: TestClient) -> None:
    session = new_session(client, title="Notes")
    once = new_message(client, session["id"], content="tea once among many other words in this longer sentence")
    often = new_message(client, session["id"], content="tea tea tea")
    newer_once = new_message(client, session["id"], content="tea once among many other words in this longer sentence")
    ids = [hit["message_id"] for hit in _search(client, "tea")["items"]]
    assert ids == [often["id"], newer_once["id"], once["id"]]


def test_only_complete_messages_are_found_and_updates_are_followed(client: TestClient) -> None:
    answer = new_answer(client)
    claim(client, answer["id"])
    append(client, answer["id"], 0, "the secret word is zeppelin")
    assert _search(client, "zeppelin")["items"] == []  # still being written
    client.patch(f"/messages/{answer['id']}", json={"status": "complete"})
    assert [hit["message_id"] for hit in _search(client, "zeppelin")["items"]] == [answer["id"]]
    client.put(f"/messages/{answer['id']}", json={"content": "now it says dirigible"})
    assert _search(client, "zeppelin")["items"] == []
    assert len(_search(client, "dirigible")["items"]) == 1
    client.put(f"/sessions/{answer['session_id']}", json={"title": "Airships"})
    assert [hit["kind"] for hit in _search(client, "airships")["items"]] == ["session"]
    client.delete(f"/sessions/{answer['session_id']}")
    assert _search(client, "dirigible")["items"] == []
    assert _search(client, "airships")["items"] == []


def test_user_filter_and_pages(client: TestClient) -> None:
    for user in ("alice", "bob"):
        session = new_session(client, user_id=user, title="Log")
        for i in range(5):
            new_message(client, session["id"], content=f"entry {i} about kites")
    assert len(_search(client, "kites")["items"]) == 10
    seen, cursor = [], None
    while True:
        page = _search(client, "kites", user_id="alice", limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [hit["message_id"] for hit in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == len(set(seen)) == 5
    # An empty user filters as in /sessions: no user has an empty id, so nothing is found (it was a 500).
    assert _search(client, "kites", user_id="")["items"] == []
    assert client.get("/sessions", params={"user_id": ""}).json()["items"] == []


@pytest.mark.parametrize("q", ["!!!", "   ", "\"'", "a\x00b"])
def test_queries_without_words_are_4xx(client: TestClient, q: str) -> None:
    response = client.get("/search", params={"q": q})
    assert response.status_code in (400, 422)
    assert "code" in response.json()


@pytest.mark.parametrize("q", ["_", "AND", "OR NOT", "NEAR(a b)", "col:umn", "x*", "'; DROP TABLE messages; --"])
def test_query_syntax_of_either_engine_is_plain_text(client: TestClient, q: str) -> None:
    session = new_session(client, title="Syntax")
    new_message(client, session["id"], content="AND OR NOT near column")
    response = client.get("/search", params={"q": q})
    assert response.status_code in (200, 400), response.text
    assert client.get("/sessions").status_code == 200
