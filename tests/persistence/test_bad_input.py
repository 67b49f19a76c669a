"""Hostile and malformed input gets a clear 4xx in the one error shape, never a 500, and stores nothing."""

import json

import pytest
from fastapi.testclient import TestClient

from shared import ErrorBody
from tests.persistence.conftest import new_answer, new_session

NUL = "a\x00b"


def _assert_error(response, status: int) -> None:
    assert response.status_code == status, response.text
    ErrorBody.model_validate(response.json())  # the shape the OpenAPI document gives every error


def test_the_openapi_document_gives_every_error_the_one_shape(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's own 422 shape, never sent
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            schema = operation["responses"]["4XX"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)


@pytest.mark.parametrize(
    "body",
    [
        {"title": NUL},
        {"user_id": NUL},
        {"metadata": {"k": NUL}},
        {"metadata": {NUL: 1}},
        {"metadata": {"deep": [[[["x", NUL]]]]}},
        {"metadata": ["not", "an", "object"]},
        {"user_id": "u" * 256},
    ],
)
def test_bad_session_bodies(client: TestClient, body: dict) -> None:
    _assert_error(client.post("/sessions", json=body), 422)
    assert client.get("/sessions").json()["items"] == []


@pytest.mark.parametrize(
    "raw",
    [
        '{"metadata": {"x": NaN}}',
        '{"metadata": {"x": Infinity}}',
        '{"metadata": {"x": -Infinity}}',
        '{"metadata": {"x": 1e999}}',
        '{"title": "unterminated',
        "[]",
        '"just a string"',
        "",
    ],
)
def test_unstorable_or_broken_json(client: TestClient, raw: str) -> None:
    response = client.post("/sessions", content=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert "code" in response.json()


def test_deeply_nested_json_is_rejected(client: TestClient) -> None:
    for depth in (40, 5000):
        raw = '{"metadata": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
        response = client.post("/sessions", content=raw, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, depth


def test_nul_in_message_content_and_context(client: TestClient) -> None:
    session = new_session(client)
    url = f"/sessions/{session['id']}/messages"
    _assert_error(client.post(url, json={"role": "user", "content": NUL}), 422)
    _assert_error(client.post(url, json={"role": "user", "content": "x", "context": {"d": [NUL]}}), 422)
    answer = new_answer(client)
    _assert_error(client.post(f"/messages/{answer['id']}/append", json={"offset": 0, "text": NUL}), 422)
    _assert_error(client.patch(f"/messages/{answer['id']}", json={"error": NUL}), 422)


def test_unpaired_surrogates_are_422_and_pairs_are_one_character(client: TestClient) -> None:
    """JSON can spell half a surrogate pair ("\\ud83d"), which has no UTF-8 form: refused, not a 500."""
    session = new_session(client)
    messages = f"/sessions/{session['id']}/messages"
    answer = new_answer(client)
    for url, raw in [
        (messages, r'{"role": "user", "content": "x\ud83dy"}'),
        (messages, r'{"role": "user", "content": "x", "context": {"\udfff": 1}}'),
        ("/sessions", r'{"title": "ok", "metadata": {"k": ["\ud800"]}}'),
        (f"/messages/{answer['id']}/append", r'{"offset": 0, "text": "\ud83d"}'),
    ]:
        response = client.post(url, content=raw, headers={"content-type": "application/json"})
        _assert_error(response, 422)
        assert "unpaired surrogate" in response.json()["detail"]
    assert client.get(messages).json()["items"] == []
    raw = r'{"role": "user", "content": "\ud83d\ude00"}'
    response = client.post(messages, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 201, response.text
    assert response.json()["content"] == "\U0001f600"


@pytest.mark.parametrize("params", [{"user_id": NUL}, {"q": NUL}, {"q": "x" * 201}])
def test_bad_query_strings(client: TestClient, params: dict) -> None:
    _assert_error(client.get("/sessions", params=params), 422)


@pytest.mark.parametrize(
    "path", ["/sessions/not-a-uuid", "/messages/123", "/sessions/1/messages", "/sessions/%00/messages/last"]
)
def test_invalid_ids_are_422(client: TestClient, path: str) -> None:
    _assert_error(client.get(path), 422)


def test_oversize_body_is_413(client: TestClient) -> None:
    big = json.dumps({"title": "t", "metadata": {"blob": "x" * 70_000}})
    _assert_error(client.post("/sessions", content=big, headers={"content-type": "application/json"}), 413)

    def chunks():
        yield b'{"title": "t", "metadata": {"blob": "'
        for _ in range(20):
            yield b"x" * 5000
        yield b'"}}'

    # Without a Content-Length the limit still holds, counted as the body streams in.
    response = client.post("/sessions", content=chunks(), headers={"content-type": "application/json"})
    _assert_error(response, 413)
    assert client.get("/sessions").json()["items"] == []


def test_unknown_route_and_method(client: TestClient) -> None:
    _assert_error(client.get("/nowhere"), 404)
    _assert_error(client.post("/messages/stale"), 405)


def test_a_405_allows_every_method_of_the_path(client: TestClient) -> None:
    # Starlette named only the first matching route's methods: POST, for a path that also lists sessions.
    response = client.put("/sessions")
    _assert_error(response, 405)
    assert response.headers["allow"] == "GET, POST"
    assert client.post("/health").headers["allow"] == "GET"


def test_wrong_content_type_is_4xx(client: TestClient) -> None:
    response = client.post(
        "/sessions", content="title=x", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert 400 <= response.status_code < 500
