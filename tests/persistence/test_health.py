import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from persistence.db import create_db_engine, migrate
from persistence.main import create_app
from tests.conftest import fresh_postgres_database
from tests.persistence.conftest import make_settings


def test_health_needs_no_key(client: TestClient) -> None:
    response = client.get("/health", headers={"x-api-key": ""})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_when_database_answers(client: TestClient) -> None:
    response = client.get("/health/ready", headers={"x-api-key": ""})
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_ready_is_503_when_database_unreachable() -> None:
    settings = make_settings("postgresql+psycopg://nobody@127.0.0.1:1/none", migrate_on_start=False)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["code"] == "not_ready"


def test_database_down_gives_503_not_500(caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings("postgresql+psycopg://nobody@127.0.0.1:1/none", migrate_on_start=False)
    with TestClient(create_app(settings), headers={"x-api-key": "test-key"}) as client:
        response = client.get("/sessions")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    # The log says why, for whoever runs the service: the client's body does not.
    logged = [r.getMessage() for r in caplog.records if r.name == "persistence.errors"]
    assert any(m.startswith("database unavailable: OperationalError: ") and "port 1" in m for m in logged), logged


def test_pool_recovers_after_the_database_drops_every_connection() -> None:
    # No pre-ping (a round trip on every request): a dropped connection fails the request that holds
    # it with a 503, and SQLAlchemy then replaces every connection older than the failure.
    with fresh_postgres_database() as url, TestClient(create_app(make_settings(url))) as client:
        headers = {"x-api-key": "test-key"}
        for _ in range(8):  # several pooled connections, all idle afterwards
            assert client.get("/sessions", headers=headers).status_code == 200
        admin = sa.create_engine(sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            dropped = connection.execute(
                sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :db"),
                {"db": sa.make_url(url).database},
            ).scalar_one()
        admin.dispose()
        assert dropped >= 1
        statuses = [client.get("/sessions", headers=headers).status_code for _ in range(8)]
    # Only the request that found its connection dead fails, with a status clients retry.
    assert statuses == [503] + [200] * 7


def _behind_by_one_migration(url: str) -> None:
    engine = create_db_engine(url)
    migrate(engine, "0004")  # without 0005's prompt column
    engine.dispose()


def test_a_schema_behind_the_code_is_named_not_reported_as_unavailable(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _behind_by_one_migration(url)
    _assert_schema_behind_is_named(url)


@pytest.mark.postgres
def test_a_schema_behind_the_code_is_named_on_postgresql_too() -> None:
    with fresh_postgres_database() as url:
        _behind_by_one_migration(url)
        _assert_schema_behind_is_named(url)


def _assert_schema_behind_is_named(url: str) -> None:
    settings = make_settings(url, migrate_on_start=False)
    with TestClient(create_app(settings), headers={"x-api-key": "test-key"}) as client:
        session = client.post("/sessions", json={"title": "old"})
        assert session.status_code == 201  # what the old schema has still works
        response = client.post(f"/sessions/{session.json()['id']}/messages", json={"role": "user", "content": "x"})
    assert response.status_code == 500
    assert "retry-after" not in response.headers  # retrying cannot help
    assert response.json()["code"] == "schema_behind"
    assert "apply the migrations" in response.json()["detail"]
