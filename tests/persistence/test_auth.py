import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from persistence.deps import UNAUTHORIZED
from tests.persistence.conftest import OLD_API_KEY, new_session

OPEN_PATHS = {"/health", "/health/ready"}
PLACEHOLDER_ID = "00000000-0000-0000-0000-000000000000"


def _protected_routes(app: FastAPI) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path.replace("{session_id}", PLACEHOLDER_ID).replace("{message_id}", PLACEHOLDER_ID))
        for path, operations in app.openapi()["paths"].items()
        if path not in OPEN_PATHS
        for method in operations
    )


WRONG_KEYS = (
    {"x-api-key": ""},
    {"x-api-key": "wrong"},
    {"x-api-key": "test-key "},
    {"x-api-key": "", "authorization": "Bearer wrong"},
    {"x-api-key": "", "authorization": "Basic test-key"},
    {"x-api-key": "", "authorization": "Bearer"},
    {"x-api-key": "", "authorization": "test-key"},
)


def test_every_protected_route_rejects_missing_and_wrong_keys(client: TestClient, app: FastAPI) -> None:
    routes = _protected_routes(app)
    assert len(routes) == 43
    assert ("GET", "/api/v1/health") in routes  # the RAG API's health needs the key, as that API's did
    for method, path in routes:
        for headers in WRONG_KEYS:
            response = client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers)
            assert response.json() == {"detail": UNAUTHORIZED, "code": "unauthorized"}


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_key_is_also_accepted_as_a_bearer_token(client: TestClient, scheme: str) -> None:
    headers = {"x-api-key": "", "authorization": f"{scheme} {OLD_API_KEY}"}
    assert client.post("/sessions", json={}, headers=headers).status_code == 201
    assert client.get("/api/v1/health", headers=headers).json() == {"status": "ok"}


def test_any_configured_key_is_accepted_so_keys_can_rotate(client: TestClient) -> None:
    assert client.get("/sessions", headers={"x-api-key": OLD_API_KEY}).status_code == 200
    assert client.get("/sessions").status_code == 200


def test_docs_are_public_and_declare_the_key(client: TestClient) -> None:
    assert client.get("/docs", headers={"x-api-key": ""}).status_code == 200
    spec = client.get("/openapi.json", headers={"x-api-key": ""}).json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "One of the keys in API_KEY / API_KEY_FILE.",
    }
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    # Either one: OpenAPI reads a list of requirements as alternatives.
    assert spec["paths"]["/sessions"]["post"]["security"] == [{"APIKeyHeader": []}, {"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/health"]["get"]


@pytest.mark.parametrize("path", ["/health", "/health/ready"])
def test_health_is_open(client: TestClient, path: str) -> None:
    assert client.get(path, headers={"x-api-key": ""}).status_code == 200


def test_key_never_echoed(client: TestClient) -> None:
    new_session(client)
    response = client.get("/sessions", headers={"x-api-key": "wrong-secret-value"})
    assert "wrong-secret-value" not in response.text
