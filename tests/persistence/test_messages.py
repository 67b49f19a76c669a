import pytest
from fastapi.testclient import TestClient

from tests.persistence.conftest import append, claim, new_answer, new_message, new_session, random_id

CONTEXT = {"documents": [{"id": "doc-1", "text": "Paris is in France.", "score": 0.93}]}


def test_create_user_message_defaults_to_complete(client: TestClient) -> None:
    session = new_session(client)
    response = client.post(
        f"/sessions/{session['id']}/messages", json={"role": "user", "content": "Où est Paris?", "context": CONTEXT}
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["role"], body["status"], body["content"], body["context"]) == (
        "user",
        "complete",
        "Où est Paris?",
        CONTEXT,
    )
    assert (body["attempts"], body["version"], body["lease_owner"]) == (0, 1, None)
    assert response.headers["etag"] == '"1"'
    assert client.get(f"/messages/{body['id']}").json() == body


def test_create_assistant_message_defaults_to_pending(client: TestClient) -> None:
    session = new_session(client)
    body = new_message(client, session["id"], role="assistant", content="")
    assert body["status"] == "pending"
    system = new_message(client, session["id"], role="system", content="Be brief.")
    assert system["status"] == "complete"


def test_create_accepts_explicit_fields(client: TestClient) -> None:
    session = new_session(client)
    body = new_message(
        client,
        session["id"],
        role="assistant",
        content="partial",
        status="failed",
        error="upstream timeout",
        model="gpt-4o-mini",
        sent_at="2025-01-02T03:04:05+02:00",
    )
    assert (body["status"], body["error"], body["model"]) == ("failed", "upstream timeout", "gpt-4o-mini")
    assert body["sent_at"] == "2025-01-02T01:04:05Z"


def test_create_in_unknown_session_is_404(client: TestClient) -> None:
    response = client.post(f"/sessions/{random_id()}/messages", json={"role": "user", "content": "hi"})
    assert response.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"role": "robot", "content": "x"},
        {"content": "x"},
        {"role": "user", "content": "x", "status": "in_progress"},
        {"role": "user", "content": "x", "status": "done"},
        {"role": "user", "content": "x", "unknown": 1},
        {"role": "user", "content": 5},
        {"role": "user", "content": "x", "id": "not-a-uuid"},
        {"role": "user", "content": "x", "options": {"temperature": 0}},  # options are an answer's
        {"role": "assistant", "options": ["temperature"]},
        {"role": "user", "content": "x", "prompt": [{"role": "user", "content": "x"}]},
        {"role": "assistant", "prompt": "hi"},
    ],
)
def test_create_rejects_bad_bodies(client: TestClient, body: dict) -> None:
    session = new_session(client)
    response = client.post(f"/sessions/{session['id']}/messages", json=body)
    assert response.status_code == 422, response.text
    assert client.get(f"/sessions/{session['id']}/messages").json()["items"] == []


def test_create_with_client_id_is_idempotent(client: TestClient) -> None:
    session = new_session(client)
    message_id = random_id()
    body = {"id": message_id, "role": "user", "content": "hello", "context": CONTEXT}
    first = client.post(f"/sessions/{session['id']}/messages", json=body)
    again = client.post(f"/sessions/{session['id']}/messages", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert len(client.get(f"/sessions/{session['id']}/messages").json()["items"]) == 1


@pytest.mark.parametrize("change", [{"content": "other"}, {"role": "system"}, {"context": {"x": 1}}])
def test_create_with_reused_id_and_other_body_is_409(client: TestClient, change: dict) -> None:
    session = new_session(client)
    body = {"id": random_id(), "role": "user", "content": "hello"}
    assert client.post(f"/sessions/{session['id']}/messages", json=body).status_code == 201
    response = client.post(f"/sessions/{session['id']}/messages", json=body | change)
    assert response.status_code == 409
    assert response.json()["code"] == "id_conflict"
    assert client.get(f"/messages/{body['id']}").json()["content"] == "hello"


@pytest.mark.parametrize(
    "change", [{"options": {"temperature": 1}}, {"options": None}, {"prompt": [{"role": "user", "content": "b"}]}]
)
def test_create_answer_with_reused_id_and_other_options_or_prompt_is_409(client: TestClient, change: dict) -> None:
    session = new_session(client)
    prompt = [{"role": "user", "content": "a"}]
    body = {"id": random_id(), "role": "assistant", "options": {"temperature": 0.5}, "prompt": prompt}
    first = client.post(f"/sessions/{session['id']}/messages", json=body)
    assert first.status_code == 201
    assert client.post(f"/sessions/{session['id']}/messages", json=body).status_code == 200
    response = client.post(f"/sessions/{session['id']}/messages", json=body | change)
    assert response.status_code == 409
    assert response.json()["code"] == "id_conflict"
    stored = client.get(f"/messages/{body['id']}").json()
    assert (stored["options"], stored["prompt"]) == ({"temperature": 0.5}, prompt)


def test_create_with_id_of_another_session_is_409(client: TestClient) -> None:
    first, second = new_session(client), new_session(client)
    body = {"id": random_id(), "role": "user", "content": "hello"}
    assert client.post(f"/sessions/{first['id']}/messages", json=body).status_code == 201
    assert client.post(f"/sessions/{second['id']}/messages", json=body).status_code == 409


def test_list_is_chronological_and_pages(client: TestClient) -> None:
    session = new_session(client)
    created = [new_message(client, session["id"], content=f"m{i}")["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"/sessions/{session['id']}/messages", params=params).json()
        seen += [m["id"] for m in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == created


def test_list_filters_by_status(client: TestClient) -> None:
    session = new_session(client)
    new_message(client, session["id"])
    answer = new_message(client, session["id"], role="assistant", content="")
    page = client.get(f"/sessions/{session['id']}/messages", params={"status": "pending"}).json()
    assert [m["id"] for m in page["items"]] == [answer["id"]]
    assert client.get(f"/sessions/{session['id']}/messages", params={"status": "nope"}).status_code == 422


def test_list_of_unknown_session_is_404_and_of_empty_one_is_empty(client: TestClient) -> None:
    assert client.get(f"/sessions/{random_id()}/messages").status_code == 404
    session = new_session(client)
    assert client.get(f"/sessions/{session['id']}/messages").json() == {"items": [], "next_cursor": None}


def test_last_message_optionally_by_role(client: TestClient) -> None:
    session = new_session(client)
    url = f"/sessions/{session['id']}/messages/last"
    assert client.get(url).json()["code"] == "no_message"
    new_message(client, session["id"], content="q1")
    answer = new_message(client, session["id"], role="assistant", content="a1")
    question = new_message(client, session["id"], content="q2")
    assert client.get(url).json()["id"] == question["id"]
    assert client.get(url, params={"role": "assistant"}).json()["id"] == answer["id"]
    assert client.get(url, params={"role": "system"}).status_code == 404
    assert client.get(f"/sessions/{random_id()}/messages/last").json()["code"] == "not_found"


def test_get_unknown_message_is_404(client: TestClient) -> None:
    assert client.get(f"/messages/{random_id()}").status_code == 404


def test_patch_updates_fields_and_bumps_version(client: TestClient) -> None:
    answer = new_answer(client)
    claim(client, answer["id"])
    response = client.patch(
        f"/messages/{answer['id']}",
        json={
            "status": "complete",
            "model": "gpt-4o-mini",
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 10, "completion_tokens": 3},
            "content": "Paris.",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "complete"
    assert (body["model"], body["finish_reason"], body["content"]) == ("gpt-4o-mini", "stop", "Paris.")
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 3}
    assert (body["lease_owner"], body["lease_expires_at"]) == (None, None)
    assert body["version"] == 3
    assert response.headers["etag"] == '"3"'


def test_patch_with_empty_body_changes_nothing(client: TestClient) -> None:
    answer = new_answer(client)
    body = client.patch(f"/messages/{answer['id']}", json={}).json()
    assert body["version"] == answer["version"]


def test_complete_message_is_final_except_rating(client: TestClient) -> None:
    session = new_session(client)
    message = new_message(client, session["id"])
    url = f"/messages/{message['id']}"
    for change in ({"content": "edited"}, {"status": "failed"}, {"error": "x"}, {"rating": True, "model": "m"}):
        response = client.patch(url, json=change)
        assert response.status_code == 409, change
        assert response.json()["status"] == "complete"
    assert client.patch(url, json={"rating": True}).json()["rating"] is True
    assert client.patch(url, json={"rating": False, "status": "complete"}).json()["rating"] is False
    assert client.patch(url, json={"rating": None}).json()["rating"] is None
    assert client.get(url).json()["content"] == "hi"


def test_if_match_guards_concurrent_edits(client: TestClient) -> None:
    answer = new_answer(client)
    url = f"/messages/{answer['id']}"
    etag = client.get(url).headers["etag"]
    first = client.patch(url, json={"error": "first"}, headers={"If-Match": etag})
    assert first.status_code == 200
    stale = client.patch(url, json={"error": "second"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert stale.json()["version"] == 2
    assert client.get(url).json()["error"] == "first"
    # The ETag as sent, a weak one, a bare number and "*" are all understood.
    assert client.patch(url, json={"error": "a"}, headers={"If-Match": '"2"'}).headers["etag"] == '"3"'
    assert client.patch(url, json={"error": "b"}, headers={"If-Match": 'W/"3"'}).headers["etag"] == '"4"'
    assert client.patch(url, json={"error": "c"}, headers={"If-Match": "4"}).headers["etag"] == '"5"'
    assert client.patch(url, json={"error": "d"}, headers={"If-Match": "*"}).headers["etag"] == '"6"'
    assert client.patch(url, json={"error": "x"}, headers={"If-Match": "abc"}).status_code == 400


def test_if_none_match_answers_an_unchanged_message_with_304(client: TestClient) -> None:
    answer = new_answer(client)
    claim(client, answer["id"])
    url = f"/messages/{answer['id']}"
    etag = client.get(url).headers["etag"]
    for tags in (etag, f"W/{etag}", f'"7", {etag}', "*"):
        unchanged = client.get(url, headers={"If-None-Match": tags})
        assert (unchanged.status_code, unchanged.content, unchanged.headers["etag"]) == (304, b"", etag), tags
    append(client, answer["id"], 0, "Hel")
    changed = client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["content"] == "Hel"
    assert changed.headers["etag"] != etag
    # Tags that are no version of ours never match.
    assert client.get(url, headers={"If-None-Match": '"abc", ""'}).status_code == 200
    assert client.get(f"/messages/{random_id()}", headers={"If-None-Match": "*"}).status_code == 404


def test_text_from_an_offset_is_what_a_follower_has_not_seen(client: TestClient) -> None:
    answer = new_answer(client)
    claim(client, answer["id"])
    append(client, answer["id"], 0, "Café 🙂 ")  # offsets count characters, in the database as here
    append(client, answer["id"], 7, "au lait")
    url = f"/messages/{answer['id']}/text"
    whole = client.get(url)
    assert whole.status_code == 200
    assert whole.json() == {
        "id": answer["id"],
        "offset": 0,
        "text": "Café 🙂 au lait",
        "length": 14,
        "version": 4,
        "status": "in_progress",
        "error": None,
        "finish_reason": None,
        "usage": None,
        "tool_calls": None,
        "model": answer["model"],
        "answer_parts": None,  # one model wrote it
    }
    assert whole.headers["etag"] == '"4"'
    tail = client.get(url, params={"offset": 5}).json()
    assert (tail["offset"], tail["text"], tail["length"]) == (5, "🙂 au lait", 14)
    assert client.get(url, params={"offset": 14}).json()["text"] == ""
    unchanged = client.get(url, params={"offset": 14}, headers={"If-None-Match": '"4"'})
    assert (unchanged.status_code, unchanged.content, unchanged.headers["etag"]) == (304, b"", '"4"')
    finish = {"status": "complete", "finish_reason": "stop", "usage": {"total_tokens": 9}}
    append(client, answer["id"], 14, ".", owner="g1", finish=finish)
    done = client.get(url, params={"offset": 14}, headers={"If-None-Match": '"4"'}).json()
    assert (done["text"], done["status"], done["finish_reason"], done["usage"]) == (
        ".",
        "complete",
        "stop",
        finish["usage"],
    )


def test_text_past_the_end_or_of_no_message_is_refused(client: TestClient) -> None:
    answer = new_answer(client)
    url = f"/messages/{answer['id']}/text"
    past = client.get(url, params={"offset": 1})
    assert (past.status_code, past.json()["code"], past.json()["length"]) == (409, "offset_mismatch", 0)
    assert client.get(url, params={"offset": -1}).status_code == 422
    assert client.get(url, params={"offset": "x"}).status_code == 422
    # The largest offset is past the end like any other; one more than any text's length is a 422 (was a 500
    # on PostgreSQL, which has no substr() for a bigint start).
    assert client.get(url, params={"offset": 2**30}).status_code == 409
    assert client.get(url, params={"offset": 2**31 - 1}).status_code == 422
    assert client.get(f"/messages/{random_id()}/text").status_code == 404


@pytest.mark.parametrize("body", [{"status": None}, {"content": None}, {"status": "done"}, {"version": 9}])
def test_patch_rejects_bad_bodies(client: TestClient, body: dict) -> None:
    answer = new_answer(client)
    assert client.patch(f"/messages/{answer['id']}", json=body).status_code == 422


def test_patch_unknown_message_is_404(client: TestClient) -> None:
    assert client.patch(f"/messages/{random_id()}", json={"rating": True}).status_code == 404


def test_list_newest_first_pages_backwards(client: TestClient) -> None:
    session = new_session(client)
    created = [new_message(client, session["id"], content=f"m{i}")["id"] for i in range(5)]
    url = f"/sessions/{session['id']}/messages"
    first = client.get(url, params={"order": "desc", "limit": 3}).json()
    rest = client.get(url, params={"order": "desc", "limit": 3, "cursor": first["next_cursor"]}).json()
    assert [m["id"] for m in first["items"] + rest["items"]] == created[::-1]
    assert rest["next_cursor"] is None
    assert client.get(url, params={"order": "sideways"}).status_code == 422
