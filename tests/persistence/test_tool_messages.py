"""An agent's conversation stored as it is: tool calls, tool results, content parts."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.persistence.conftest import append, claim, new_answer, new_message, new_session

CALLS = [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}},
    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'}},
]
PARTS = [
    {"type": "text", "text": "What is in "},
    {"type": "text", "text": "this picture?"},
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
]


def _agent_conversation(client: TestClient) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A question sent as parts, an answer that calls two tools (generated: appended, then ended with its
    calls), both tools' results, and the final answer."""
    session = new_session(client, title="Weather")
    question = new_message(client, session["id"], content="", parts=PARTS)
    answer = new_message(client, session["id"], role="assistant", content="")
    assert claim(client, answer["id"]).status_code == 200
    finish = {"status": "complete", "finish_reason": "tool_calls", "tool_calls": CALLS}
    ended = append(client, answer["id"], 0, "Let me check.", owner="g1", finish=finish)
    assert ended.status_code == 200, ended.text
    results = [
        new_message(
            client, session["id"], role="tool", content="18°C, sunny", tool_call_id="call_1", name="get_weather"
        ),
        new_message(client, session["id"], role="tool", content="14:05", tool_call_id="call_2", name="get_time"),
    ]
    final = new_message(client, session["id"], role="assistant", content="Warm and bright at 14:05.", status="complete")
    return session, [question, answer, *results, final]


def test_parts_calls_and_results_are_stored_and_listed_as_sent(client: TestClient) -> None:
    session, _ = _agent_conversation(client)
    listed = client.get(f"/sessions/{session['id']}/messages").json()["items"]
    question, answer, weather, time, final = listed
    assert (question["content"], question["parts"]) == ("What is in this picture?", PARTS)
    assert (answer["content"], answer["tool_calls"], answer["finish_reason"]) == ("Let me check.", CALLS, "tool_calls")
    assert (weather["role"], weather["tool_call_id"], weather["name"], weather["content"]) == (
        "tool",
        "call_1",
        "get_weather",
        "18°C, sunny",
    )
    assert time["tool_call_id"] == "call_2"
    assert final["tool_calls"] is None
    one = client.get(f"/messages/{answer['id']}").json()
    assert one["tool_calls"] == CALLS
    # A follower reads the calls with the answer's end.
    assert client.get(f"/messages/{answer['id']}/text", params={"offset": 13}).json()["tool_calls"] == CALLS


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"role": "tool", "content": "18°C"}, "tool_call_id"),
        ({"role": "user", "content": "hi", "tool_calls": CALLS}, "assistant messages only"),
        ({"role": "user", "content": "hi", "tool_call_id": "call_1"}, "tool messages only"),
        ({"role": "assistant", "content": "", "parts": PARTS}, "user and system messages only"),
        ({"role": "user", "parts": [{"text": "no type"}]}, '"type"'),
        ({"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}, "arguments"),
        ({"role": "assistant", "tool_calls": [{"id": "", "function": {"name": "f", "arguments": ""}}]}, "id"),
    ],
)
def test_tool_fields_on_the_wrong_role_or_malformed_are_a_422(
    client: TestClient, fields: dict[str, Any], problem: str
) -> None:
    session = new_session(client)
    response = client.post(f"/sessions/{session['id']}/messages", json=fields)
    assert response.status_code == 422, response.text
    assert problem in response.text
    assert client.get(f"/sessions/{session['id']}/messages").json()["items"] == []


def test_a_replayed_create_with_other_calls_is_a_conflict(client: TestClient) -> None:
    session = new_session(client)
    body = {"role": "assistant", "content": "", "status": "complete", "tool_calls": CALLS}
    first = new_message(client, session["id"], **body)
    replay = client.post(f"/sessions/{session['id']}/messages", json=body | {"id": first["id"]})
    assert (replay.status_code, replay.json()["tool_calls"]) == (200, CALLS)
    other = client.post(f"/sessions/{session['id']}/messages", json=body | {"id": first["id"], "tool_calls": CALLS[:1]})
    assert other.status_code == 409


def test_calls_come_only_with_the_answers_end_and_a_retried_end_is_refused(client: TestClient) -> None:
    answer = new_answer(client)
    claim(client, answer["id"])
    refused = append(client, answer["id"], 0, "x", owner="g1", tool_calls=CALLS)
    assert refused.status_code == 422  # calls are not text: there is no offset in the middle of one
    finish = {"status": "complete", "finish_reason": "tool_calls", "tool_calls": CALLS}
    assert append(client, answer["id"], 0, "", owner="g1", finish=finish).status_code == 200
    again = append(client, answer["id"], 0, "", owner="g1", finish=finish | {"tool_calls": CALLS[:1]})
    assert again.status_code == 409
    assert client.get(f"/messages/{answer['id']}").json()["tool_calls"] == CALLS


def test_search_finds_messages_by_the_tools_they_name(client: TestClient) -> None:
    _agent_conversation(client)
    hits = client.get("/search", params={"q": "get_weather"}).json()["items"]
    assert {(hit["role"], hit["kind"]) for hit in hits} == {("assistant", "message"), ("tool", "message")}
    assert client.get("/search", params={"q": "sunny"}).json()["items"][0]["role"] == "tool"


def test_export_holds_everything_and_imports_back(client: TestClient) -> None:
    session, _ = _agent_conversation(client)
    document = client.get(f"/sessions/{session['id']}/export").json()
    assert document["version"] == 2
    messages = document["messages"]
    assert (messages[0]["parts"], messages[1]["tool_calls"], messages[2]["tool_call_id"]) == (PARTS, CALLS, "call_1")
    client.delete(f"/sessions/{session['id']}")
    imported = client.post("/sessions/import", json=document)
    assert imported.status_code == 201, imported.text
    again = client.get(f"/sessions/{session['id']}/export").json()
    assert again["messages"] == messages
    # Search knows the imported calls too.
    assert len(client.get("/search", params={"q": "get_time"}).json()["items"]) == 2


def test_a_version_1_document_still_imports(client: TestClient) -> None:
    session = new_session(client)
    new_message(client, session["id"], content="hello")
    document = client.get(f"/sessions/{session['id']}/export").json()
    client.delete(f"/sessions/{session['id']}")
    document["version"] = 1
    for message in document["messages"]:
        for name in ("parts", "tool_calls", "tool_call_id", "name"):
            message.pop(name)
    assert client.post("/sessions/import", json=document).status_code == 201


def test_markdown_shows_calls_results_and_images(client: TestClient) -> None:
    session, _ = _agent_conversation(client)
    markdown = client.get(f"/sessions/{session['id']}/export", params={"format": "md"}).text
    assert "![image](https://example.com/cat.png)" in markdown
    assert "**Calls `get_weather`** (call `call_1`):" in markdown
    assert '{"city": "Lyon"}' in markdown
    assert "*Result of `get_time` (call `call_2`):*" in markdown


def test_an_image_given_as_a_bare_url_or_without_one_is_exported_without_a_500(client: TestClient) -> None:
    session = new_session(client)
    parts = [
        {"type": "text", "text": "Look"},
        {"type": "image_url", "image_url": "https://example.com/a.png"},
        {"type": "image_url", "image_url": None},
        {"type": "image_url", "image_url": 5},
    ]
    new_message(client, session["id"], content="", parts=parts)
    markdown = client.get(f"/sessions/{session['id']}/export", params={"format": "md"})
    assert markdown.status_code == 200, markdown.text
    assert "![image](https://example.com/a.png)" in markdown.text
