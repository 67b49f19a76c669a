"""Rate limits kept in Redis: one budget for every worker and instance, and no outage when Redis is down."""

import logging
import uuid

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from persistence.main import create_app
from shared import SettingsError, load_settings
from shared.ratelimit import RateLimiter, RateLimitMiddleware, shared_storage
from shared.settings import ServiceSettings
from tests.conftest import redis_url_or_skip
from tests.persistence.conftest import make_settings


@pytest.fixture(scope="module")
def redis_url() -> str:
    return redis_url_or_skip()


def limited_app(limit: str, storage_url: str, namespace: str) -> Starlette:
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
    app.add_middleware(RateLimitMiddleware, limit=limit, limiter=RateLimiter(shared_storage(storage_url, namespace)))
    return app


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex}"  # a budget of its own, whatever earlier runs left in Redis


def remaining(client: TestClient, count: int) -> list[str]:
    """What X-RateLimit-Remaining says after each of ``count`` requests ("429" for a refused one)."""
    answers = [client.get("/") for _ in range(count)]
    return ["429" if a.status_code == 429 else a.headers["x-ratelimit-remaining"] for a in answers]


def test_instances_sharing_a_store_share_one_budget(redis_url: str, namespace: str) -> None:
    first, second = limited_app("3/minute", redis_url, namespace), limited_app("3/minute", redis_url, namespace)
    with TestClient(first) as a, TestClient(second) as b:
        assert remaining(a, 2) == ["2", "1"]
        assert remaining(b, 2) == ["0", "429"]
        assert remaining(a, 1) == ["429"]


def test_services_sharing_a_store_count_apart(redis_url: str, namespace: str) -> None:
    one, other = limited_app("2/minute", redis_url, namespace), limited_app("2/minute", redis_url, namespace + "x")
    with TestClient(one) as a, TestClient(other) as b:
        assert remaining(a, 3) == ["1", "0", "429"]
        assert remaining(b, 2) == ["1", "0"]


def test_an_unreachable_store_fails_open_and_counts_in_the_process(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = limited_app("3/minute", "redis://127.0.0.1:1/0", namespace)  # nothing listens on port 1
    with caplog.at_level(logging.WARNING, "shared.ratelimit"), TestClient(app) as client:
        assert remaining(client, 4) == ["2", "1", "0", "429"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "shared.ratelimit"]
    assert len(warnings) == 1  # then not tried again for a while: every request would wait for it
    assert "127.0.0.1:1" in warnings[0]  # what failed,
    assert "counting in this process" in warnings[0]  # and what is done meanwhile


def test_two_services_with_the_setting_share_a_budget_end_to_end(redis_url: str, database_url: str) -> None:
    key = uuid.uuid4().hex  # the budget is per API key: one no earlier run has spent
    settings = make_settings(
        database_url, api_key=SecretStr(key), rate_limit="3/minute", rate_limit_storage=SecretStr(redis_url)
    )
    headers = {"x-api-key": key}
    with TestClient(create_app(settings), headers=headers) as a, TestClient(create_app(settings), headers=headers) as b:
        codes = [a.get("/sessions").status_code, b.get("/sessions").status_code, a.get("/sessions").status_code]
        refused = b.get("/sessions")
    assert codes == [200, 200, 200]
    assert (refused.status_code, refused.json()["code"]) == (429, "rate_limited")


@pytest.mark.parametrize("value", ["memory://", "http://cache:6379", "127.0.0.1:6379"])
def test_a_storage_that_is_not_redis_stops_start_up_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RATE_LIMIT_STORAGE", value)
    with pytest.raises(SettingsError, match=r"invalid setting RATE_LIMIT_STORAGE: .*redis://") as raised:
        load_settings(ServiceSettings)
    assert value not in str(raised.value)  # it may hold a password


def test_the_storage_url_can_be_a_docker_secret(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    secret = tmp_path / "rate_limit_storage"
    secret.write_text("redis://:hunter2@cache:6379/0\n")
    monkeypatch.setenv("RATE_LIMIT_STORAGE_FILE", str(secret))
    stored = load_settings(ServiceSettings).rate_limit_storage
    assert stored is not None
    assert stored.get_secret_value() == "redis://:hunter2@cache:6379/0"
