import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from persistence.config import Settings
from persistence.main import create_app
from persistence.models import Base
from tests.conftest import serve

API_KEY = "test-key"
OLD_API_KEY = "old-key"


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_key": SecretStr(f"{API_KEY}\n{OLD_API_KEY}"),
        "database_url": database_url,
        "lease_seconds": 30.0,
        "max_body_bytes": 65536,
    }
    return Settings(**(values | overrides))


@pytest.fixture(scope="session")
def app(database_url: str) -> FastAPI:
    return create_app(make_settings(database_url))


@pytest.fixture(scope="session")
def _started_client(app: FastAPI) -> Iterator[TestClient]:
    # Entering the client runs the lifespan: the engine is built and the migrations applied.
    with TestClient(app, headers={"x-api-key": API_KEY}) as client:
        yield client


def _empty_tables(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture
def client(_started_client: TestClient, app: FastAPI) -> TestClient:
    """A client of the app with a valid key, on empty tables."""
    _empty_tables(app.state.engine)
    return _started_client


@pytest.fixture(scope="session")
def _live_url(app: FastAPI, _started_client: TestClient) -> Iterator[str]:
    with serve(create_app(app.state.settings)) as url:
        yield url


@pytest.fixture
def live_url(_live_url: str, client: TestClient) -> str:
    """Base URL of a real uvicorn server (in a thread) on the same, emptied, database."""
    return _live_url


@pytest.fixture
def live(live_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, headers={"x-api-key": API_KEY}, timeout=30) as http:
        yield http


def new_session(client: TestClient | httpx.Client, **fields: Any) -> dict[str, Any]:
    response = client.post("/sessions", json={"user_id": "u1", "title": "Chat"} | fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def new_message(client: TestClient | httpx.Client, session_id: str, **fields: Any) -> dict[str, Any]:
    response = client.post(f"/sessions/{session_id}/messages", json={"role": "user", "content": "hi"} | fields)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def new_answer(client: TestClient | httpx.Client, **fields: Any) -> dict[str, Any]:
    """A pending assistant message in a new session."""
    session = new_session(client)
    return new_message(client, session["id"], role="assistant", content="", **fields)


def claim(client: TestClient | httpx.Client, message_id: str, owner: str = "g1", **fields: Any) -> Any:
    return client.post(f"/messages/{message_id}/claim", json={"owner": owner} | fields)


def append(client: TestClient | httpx.Client, message_id: str, offset: int, text: str, **fields: Any) -> Any:
    return client.post(f"/messages/{message_id}/append", json={"offset": offset, "text": text} | fields)


def random_id() -> str:
    return str(uuid.uuid4())
