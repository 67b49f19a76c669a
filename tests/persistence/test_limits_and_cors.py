from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from chat_gateway.config import Settings as GatewaySettings
from persistence.main import create_app
from shared import SettingsError, load_settings
from tests.persistence.conftest import API_KEY, OLD_API_KEY, make_settings


@pytest.fixture
def limited(database_url: str) -> Iterator[TestClient]:
    settings = make_settings(database_url, rate_limit="3/minute", cors_origins="https://app.example, https://b.example")
    with TestClient(create_app(settings), headers={"x-api-key": API_KEY}) as client:
        yield client


def test_rate_limit_per_key_with_headers_and_retry_after(limited: TestClient) -> None:
    answers = [limited.get("/sessions") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert answers[0].headers["x-ratelimit-limit"] == "3"
    refused = answers[-1]
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # Another key has its own budget; health and metrics are never limited.
    assert limited.get("/sessions", headers={"x-api-key": OLD_API_KEY}).status_code == 200
    assert limited.get("/health").status_code == 200
    assert limited.get("/metrics").status_code == 200


def test_one_key_is_one_budget_however_it_is_sent(limited: TestClient) -> None:
    spellings = [
        {"x-api-key": API_KEY},
        {"x-api-key": "", "authorization": f"Bearer {API_KEY}"},
        {"x-api-key": "", "authorization": f"bEARER  {API_KEY}"},
        {"x-api-key": API_KEY, "authorization": f"BEARER {API_KEY}"},
    ]
    answers = [limited.get("/sessions", headers=headers) for headers in spellings]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]


def test_cors_only_for_configured_origins(limited: TestClient) -> None:
    preflight = limited.options(
        "/sessions",
        headers={"origin": "https://app.example", "access-control-request-method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    simple = limited.get("/health", headers={"origin": "https://b.example"})
    assert simple.headers["access-control-allow-origin"] == "https://b.example"
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    other = limited.get("/health", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_defaults_limit_the_gateway_but_not_persistence(client: TestClient) -> None:
    for _ in range(5):
        assert "x-ratelimit-limit" not in client.get("/sessions").headers
    assert GatewaySettings(api_key="k").rate_limit == "60/minute"


@pytest.mark.parametrize("value", ["none", "off", "None"])
def test_rate_limit_none_turns_the_gateway_default_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("API_KEY", "k")
    monkeypatch.setenv("RATE_LIMIT", value)
    assert load_settings(GatewaySettings).rate_limit is None


def test_a_malformed_rate_limit_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "k")
    monkeypatch.setenv("RATE_LIMIT", "lots")
    with pytest.raises(SettingsError, match="invalid setting RATE_LIMIT"):
        load_settings(GatewaySettings)
