"""The gateway's own HTTP surface: client auth and bad input, before any call leaves the process."""

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from chat_gateway.answers.events import StreamEvent
from chat_gateway.answers.service import Answers
from chat_gateway.config import Settings
from chat_gateway.main import create_app
from chat_gateway.openai_api.chat_completions.protocol import ChunkFormat, OpenAIErrorBody
from chat_gateway.openai_api.chat_completions.routes import _chunks
from shared import ErrorBody, MessageStatus

OPEN_PATHS = {"/health", "/health/ready"}
ID = "00000000-0000-0000-0000-000000000000"


def _app(**overrides: object) -> TestClient:
    settings = Settings(
        api_key=SecretStr("persistence-key"),
        api_base_url="http://127.0.0.1:1",  # nothing listens: these tests never get that far
        openai_api_key=SecretStr("sk-test"),
        recovery_interval_seconds=3600,
        persistence_retry_attempts=1,
        turn_settle_seconds=0.1,  # a chat that reaches persistence is refused at once
        **({"max_body_bytes": 4096} | overrides),  # type: ignore[arg-type]
    )
    return TestClient(create_app(settings))


@pytest.fixture
def open_gateway() -> Iterator[TestClient]:
    with _app() as client:
        yield client


@pytest.fixture
def locked_gateway() -> Iterator[TestClient]:
    # Refusing every route twice, from one address: more than AUTH_FAILURE_LIMIT's default allows.
    with _app(chat_api_keys=SecretStr("client-key\nnext-key"), auth_failure_limit="1000/minute") as client:
        yield client


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"message": ""},
        {"message": "hi", "unknown": 1},
        {"message": "hi\x00"},
        {"message": "hi", "session_id": "nope"},
        {"message": "hi", "stream": "sometimes"},
        {"message": "hi", "user_id": "u" * 300},
        {"message": "hi", "options": {"temperature": 3}},
        {"message": "hi", "options": {"max_tokens": 0}},
        {"message": "hi", "options": {"stop": ["a", "b", "c", "d", "e"]}},
        {"message": "hi", "options": {"tools": []}},  # no tools is no list of them
        {"message": "hi", "options": {"functions": []}},  # only generation options
    ],
)
def test_bad_chat_bodies_are_422(open_gateway: TestClient, body: dict) -> None:
    response = open_gateway.post("/chat", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request"


def test_oversize_and_malformed_requests(open_gateway: TestClient) -> None:
    assert open_gateway.post("/chat", json={"message": "x" * 5000}).status_code == 413
    json_type = {"content-type": "application/json"}
    assert open_gateway.post("/chat", content="{", headers=json_type).status_code == 422
    nan = '{"message": "hi", "context": {"x": NaN}}'
    assert open_gateway.post("/chat", content=nan, headers=json_type).status_code == 422
    assert open_gateway.get(f"/chat/messages/{ID}/stream", headers={"last-event-id": "abc"}).status_code == 422
    assert open_gateway.get(f"/chat/messages/{ID}/stream", params={"offset": -1}).status_code == 422
    assert open_gateway.post("/chat/messages/not-a-uuid/cancel").status_code == 422


def test_persistence_down_is_503_not_500(open_gateway: TestClient) -> None:
    response = open_gateway.post("/chat", json={"message": "hi"})
    assert response.status_code == 503
    assert response.json()["code"] == "persistence_unavailable"
    assert open_gateway.get("/health/ready").status_code == 503
    assert open_gateway.get("/health").status_code == 200


def test_unpaired_surrogates_are_refused_before_anything_is_stored(open_gateway: TestClient) -> None:
    """Half a surrogate pair ("\\ud83d" in JSON) has no UTF-8 form: a 4xx, not a 500 from deep inside."""
    json_type = {"content-type": "application/json"}
    response = open_gateway.post("/chat", content=r'{"message": "hi \ud83d"}', headers=json_type)
    assert response.status_code == 422, response.text
    assert "unpaired surrogate \\ud83d" in response.json()["detail"]
    body = r'{"model": "m", "messages": [{"role": "user", "content": "hi \udfff"}]}'
    response = open_gateway.post("/v1/chat/completions", content=body, headers=json_type)
    assert response.status_code == 400, response.text
    assert "unpaired surrogate" in response.json()["error"]["message"]


def test_the_openapi_document_gives_errors_the_shape_they_have(open_gateway: TestClient) -> None:
    spec = open_gateway.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        shape = "OpenAIErrorBody" if path.startswith("/v1/") else "ErrorBody"
        for operation in operations.values():
            schema = operation["responses"]["4XX"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{shape}"}, path
    refused = open_gateway.post("/v1/chat/completions", json={"messages": []})
    OpenAIErrorBody.model_validate(refused.json())
    ErrorBody.model_validate(open_gateway.post("/chat", json={}).json())


def test_client_auth_protects_every_chat_route(locked_gateway: TestClient) -> None:
    paths = locked_gateway.app.openapi()["paths"]  # type: ignore[attr-defined]
    routes = [(m.upper(), p.replace("{message_id}", ID).replace("{session_id}", ID)) for p in paths for m in paths[p]]
    protected = [(m, p) for m, p in routes if p not in OPEN_PATHS]
    assert len(protected) == 39
    for method, path in protected:
        for headers in ({}, {"x-api-key": "wrong"}):
            response = locked_gateway.request(method, path, headers=headers, json={"message": "hi"})
            assert response.status_code == 401, (method, path)
            body = response.json()
            code = body["error"]["code"] if path.startswith("/v1/") else body["code"]
            assert code == "unauthorized"
    # A valid key gets past auth (and on to the unreachable persistence service).
    response = locked_gateway.post("/chat", json={"message": "hi"}, headers={"x-api-key": "next-key"})
    assert response.status_code == 503
    assert locked_gateway.get("/health").status_code == 200
    assert locked_gateway.get("/docs").status_code == 200


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_every_route_takes_the_key_as_a_bearer_token_in_any_case(locked_gateway: TestClient, scheme: str) -> None:
    headers = {"authorization": f"{scheme} client-key"}
    assert locked_gateway.get("/v1/models", headers=headers).status_code == 200
    # Past auth, on to the unreachable persistence service.
    assert locked_gateway.get("/chat/sessions", headers=headers).status_code == 503
    assert locked_gateway.get("/chat/sessions", headers={"authorization": f"{scheme} nope"}).status_code == 401


def test_openai_routes_take_a_bearer_key_and_answer_errors_in_openai_shape(locked_gateway: TestClient) -> None:
    assert locked_gateway.get("/v1/models", headers={"authorization": "Bearer client-key"}).status_code == 200
    refused = locked_gateway.get("/v1/models", headers={"authorization": "Bearer nope"})
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"
    invalid = locked_gateway.post(
        "/v1/chat/completions", json={"messages": "hi"}, headers={"authorization": "Bearer client-key"}
    )
    assert invalid.status_code == 400
    assert set(invalid.json()["error"]) == {"message", "type", "param", "code"}
    wrong_method = locked_gateway.get("/v1/chat/completions", headers={"authorization": "Bearer client-key"})
    assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n": 2}, "body.n: one choice per request is supported: n must be 1"),
        ({"functions": [{"name": "f"}]}, "body.functions: the legacy `functions` parameter is not supported"),
        ({"modalities": ["text", "audio"]}, "body.modalities: only text output is supported"),
        ({"audio": {"voice": "alloy"}}, "body.audio: only text output is supported"),
        ({"temperature": -1}, "body.temperature: Input should be greater than or equal to 0"),
        ({"max_tokens": "many"}, "body.max_tokens: Input should be a valid integer"),
    ],
)
def test_openai_parameters_asking_for_more_than_one_text_answer_are_400(
    open_gateway: TestClient, fields: dict, message: str
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    response = open_gateway.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"].startswith(message), error
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_request")


ASKED = {"role": "user", "content": "Weather?"}
CALLED = {
    "role": "assistant",
    "content": "",
    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
}


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([ASKED, CALLED | {"tool_calls": 5}, ASKED], "tool_calls"),
        ([ASKED, CALLED | {"tool_calls": True}, ASKED], "tool_calls"),
        ([ASKED, CALLED | {"tool_calls": [{"id": "c1", "function": "f"}]}, ASKED], "function"),
        ([ASKED, CALLED | {"tool_calls": [{"id": "", "function": {"name": "f", "arguments": ""}}]}, ASKED], "id"),
        ([ASKED, CALLED, {"role": "tool", "content": "18°C", "tool_call_id": "c1", "name": "n" * 200}], "name"),
        ([ASKED, CALLED, {"role": "tool", "content": "18°C"}], "tool_call_id"),
        ([{"role": "user", "content": [{"image_url": {"url": "x"}}]}], "type"),
        ([{"role": "user", "content": [{"type": 5}]}], "type"),
        ([ASKED, CALLED, *[{"role": "tool", "tool_call_id": f"{i}"} for i in range(129)]], "128"),
        ([ASKED, CALLED, {"role": "assistant", "content": "again"}], "last message"),
    ],
)
def test_a_conversation_the_gateway_cannot_store_is_a_400_before_anything_is_stored(
    messages: list[dict], problem: str
) -> None:
    with _app(max_body_bytes=65536) as gateway:  # persistence is unreachable: a 400 comes before it
        response = gateway.post("/v1/chat/completions", json={"model": "m", "messages": messages})
    assert response.status_code == 400, response.text
    assert problem in response.json()["error"]["message"]


def test_a_chat_round_adds_at_most_128_messages() -> None:
    results = [{"tool_call_id": f"c{i}", "content": "r"} for i in range(128)]
    body = {"session_id": str(uuid.uuid4()), "tool_results": results, "message": "and?"}
    with _app(max_body_bytes=65536) as gateway:
        response = gateway.post("/chat", json=body)
    assert response.status_code == 422, response.text
    assert "at most 128" in response.text


@pytest.mark.parametrize(
    "fields",
    [
        {"n": 1},
        {"parallel_tool_calls": False},
        {"logprobs": False},
        {"modalities": ["text"]},
        {"store": True, "x": [1]},
    ],
)
def test_openai_parameters_that_change_nothing_are_accepted(open_gateway: TestClient, fields: dict) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    response = open_gateway.post("/v1/chat/completions", json=body)
    assert response.status_code == 503  # past validation, on to the unreachable persistence service
    assert response.json()["error"]["code"] == "persistence_unavailable"


def test_the_limits_answer_in_openai_shape_under_v1_only() -> None:
    """The rate and body limits answer before the app's handlers; under /v1 they still speak OpenAI's shape."""
    with _app(rate_limit="2/minute") as gateway:
        big = {"messages": [{"role": "user", "content": "x" * 5000}]}
        too_large = gateway.post("/v1/chat/completions", json=big)
        assert too_large.status_code == 413
        assert too_large.json()["error"] == {
            "message": "request body is larger than 4096 bytes",
            "type": "invalid_request_error",
            "param": None,
            "code": "too_large",
        }
        # Counted once the caller is known: the body limit answered before, and counted nothing.
        assert [gateway.get("/v1/models").status_code for _ in range(2)] == [200, 200]
        refused = gateway.get("/v1/models")
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-remaining"] == "0"
        elsewhere = gateway.post("/chat", json={"message": "hi"})
        assert elsewhere.status_code == 429
        assert elsewhere.json()["code"] == "rate_limited"


def test_missing_persistence_key_stops_start_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("API_KEY", "API_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as info:
        create_app()
    assert str(info.value).startswith("chat_gateway: missing secret API_KEY")


@pytest.mark.parametrize("text", ["plain ", 'a "quote" and a \\', "line\nbreak\t", "é 漢字 🙂", "\0", ""])
@pytest.mark.parametrize("model", ["fake-model", 'odd \0 "content": "\\u0000" model'])
@pytest.mark.parametrize("include_usage", [False, True])
def test_a_text_chunk_is_rendered_as_the_whole_chunk_would_be(text: str, model: str, include_usage: bool) -> None:
    render = ChunkFormat(uuid.uuid4(), model, include_usage)
    rendered = render.text(text)
    assert rendered == render.chunk({"content": text})
    assert json.loads(rendered.removeprefix("data: "))["choices"][0]["delta"] == {"content": text}


class _Following:
    """Answers whose follow yields the given events."""

    def __init__(self, *events: StreamEvent) -> None:
        self.events = events

    async def follow(self, _message_id: uuid.UUID, _offset: int) -> AsyncIterator[StreamEvent]:
        for event in self.events:
            yield event


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("event", "message"),
    [
        (StreamEvent("error", 2, status=MessageStatus.FAILED, error="boom"), "the answer failed: boom"),
        (StreamEvent("error", 2, error="lost track of the answer: down"), "lost track of the answer: down"),
    ],
)
async def test_an_openai_stream_ends_with_the_error_as_openai_sends_one(event: StreamEvent, message: str) -> None:
    answers: Answers = _Following(StreamEvent("delta", 2, text="Hi"), event)  # type: ignore[assignment]
    lines = [line async for line in _chunks(answers, uuid.UUID(ID), "m", include_usage=False)]
    assert json.loads(lines[-1].removeprefix("data: "))["error"] == {"message": message, "type": "api_error"}
    assert json.loads(lines[-2].removeprefix("data: "))["choices"][0]["delta"] == {"content": "Hi"}


def test_open_mode_counts_clients_per_address_whatever_key_they_send() -> None:
    with _app(rate_limit="3/minute") as gateway:
        statuses = [gateway.get("/chat/sessions", headers={"x-api-key": f"made-up-{n}"}).status_code for n in range(5)]
        assert statuses == [503, 503, 503, 429, 429]  # past the limit, on to the unreachable persistence service


def test_jwt_settings_must_name_issuer_and_audience() -> None:
    with pytest.raises(ValueError, match="JWT_ISSUER and JWT_AUDIENCE"):
        _app(jwt_jwks_url="https://idp.example.test/jwks.json")
    with pytest.raises(ValueError, match="not both"):
        _app(jwt_jwks_url="https://idp.test/jwks", jwt_public_key=SecretStr("pem"), jwt_issuer="i", jwt_audience="a")
