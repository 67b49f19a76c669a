from fastapi.testclient import TestClient

from persistence.main import create_app
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


def test_database_down_gives_503_not_500() -> None:
    settings = make_settings("postgresql+psycopg://nobody@127.0.0.1:1/none", migrate_on_start=False)
    with TestClient(create_app(settings), headers={"x-api-key": "test-key"}) as client:
        response = client.get("/sessions")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
