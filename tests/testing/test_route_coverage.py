"""The route coverage check (``pytest --routes-covered``): which routes the gateway has, and which a test reached."""

from fastapi.testclient import TestClient
from pydantic import SecretStr

from chat_gateway.config import Settings
from chat_gateway.main import create_app
from testing.route_coverage import counted_routes, gateway_routes


def test_the_gateways_routes_are_its_documented_ones_its_page_and_the_pages_files() -> None:
    routes = gateway_routes()
    assert {("GET", "/"), ("GET", "/ui"), ("POST", "/v1/responses"), ("GET", "/v1/models/{model_id}")} <= routes
    # FastAPI's own, the metrics and persistence's are not the gateway's API.
    assert not {("GET", "/docs"), ("GET", "/openapi.json"), ("GET", "/metrics"), ("GET", "/sessions")} & routes


def test_a_request_is_counted_under_its_route_template() -> None:
    with TestClient(create_app(Settings(api_key=SecretStr("k")))) as client:
        client.get("/v1/models/some/model")
        client.get("/chat/sessions/not-an-id")
    counted = counted_routes()
    assert {("GET", "/v1/models/{model_id}"), ("GET", "/chat/sessions/{session_id}")} <= counted
    assert not any("not-an-id" in path for _, path in counted)
