import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from pydantic_settings import BaseSettings

from chat_gateway.config import Settings as GatewaySettings
from chat_gateway.main import create_app
from persistence.config import Settings as PersistenceSettings
from persistence.main import create_app as create_persistence_app
from shared import MessageRole, MessageStatus
from shared.contract import AnswerFinish, MessageDetail
from shared.server import HttpToolsProtocol
from testing.processes import Service
from testing.upstream import create_fake_openai, reset
from tests.conftest import fresh_postgres_database, serve, unreachable

PERSISTENCE_KEY = "e2e-persistence-key"
S = TypeVar("S", bound=BaseSettings)


def _base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_KEY", "_KEY_FILE", "_URL"))}
    secrets = tmp / "no-secrets"
    secrets.mkdir(exist_ok=True)
    return env | {"SECRETS_DIR": str(secrets), "API_KEY": PERSISTENCE_KEY}


@contextmanager
def persistence_on(tmp: Path, database: str) -> Iterator[Service]:
    """The persistence service on ``database``: "sqlite" (a file in ``tmp``) or "postgresql" (a database of its
    own on the test server, dropped afterwards)."""
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp / 'chat.db'}"
        if database == "postgresql":
            url = stack.enter_context(fresh_postgres_database())
        env = _base_env(tmp) | {"DATABASE_URL": url, "LEASE_SECONDS": "2"}
        service = Service.uvicorn("persistence.main:create_app", env, tmp / "persistence.log").start()
        stack.callback(service.kill, signal.SIGTERM)
        yield service


@pytest.fixture(scope="module")
def persistence(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with persistence_on(tmp_path_factory.mktemp("persistence"), "sqlite") as service:
        yield service


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def persistence_on_both(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``persistence`` on SQLite, then on PostgreSQL, for a module whose tests must hold on both: it names it
    its ``persistence`` (test_real_clients.py)."""
    with persistence_on(tmp_path_factory.mktemp("persistence"), request.param) as service:
        yield service


@pytest.fixture(scope="module")
def clients() -> Path:
    """The real clients' virtualenv's bin directory (`make clients`): they run as their users install them."""
    venv = Path(os.environ.get("CLIENTS_VENV", Path(__file__).resolve().parents[2] / ".venv-clients"))
    if not (venv / ".installed").exists():
        unreachable(f"the real clients are not installed in {venv}: `make clients` installs them")
    return venv / "bin"


@pytest.fixture(scope="module")
def _fake_openai_server() -> Iterator[tuple[FastAPI, str]]:
    app = create_fake_openai()
    with serve(app) as url:
        yield app, url


@pytest.fixture
def fake_openai(_fake_openai_server: tuple[FastAPI, str]) -> FastAPI:
    app, _ = _fake_openai_server
    reset(app)
    return app


@pytest.fixture
def fake_openai_url(_fake_openai_server: tuple[FastAPI, str], fake_openai: FastAPI) -> str:
    """The fake upstream's base URL (its state reset, as with ``fake_openai``)."""
    return _fake_openai_server[1]


def gateway_env(tmp: Path, persistence_url: str, upstream_url: str | None, **extra: str) -> dict[str, str]:
    env = _base_env(tmp) | {
        "API_BASE_URL": persistence_url,
        "RETRY_INITIAL_WAIT": "0",
        "RETRY_MAX_WAIT": "0",
        "LEASE_SECONDS": "1.5",
        "RECOVERY_INTERVAL_SECONDS": "0.25",
        "FLUSH_INTERVAL_SECONDS": "0.05",
        "REATTACH_POLL_SECONDS": "0.05",
        "OPENAI_MODEL": "fake-model",
        # The tests of a module share one database and ask the same questions within a minute: a completed
        # answer is not another test's retry. Retries of answers still generated or failed attach whatever this
        # is; the tests of retries after completion set their own.
        "RETRY_WINDOW_SECONDS": "0",
    }
    if upstream_url is not None:
        env |= {"OPENAI_API_KEY": "sk-fake", "OPENAI_BASE_URL": f"{upstream_url}/v1"}
    return env | extra


def settings_from(model: type[S], env: dict[str, str]) -> S:
    """``model`` as a process given only ``env`` would read it (this process's environment left out)."""
    return model.model_validate({name.lower(): value for name, value in env.items()})


@dataclass
class LocalService:
    """A service in this process, served by uvicorn in a thread at ``url``: what the API tests that kill, pause
    or restart nothing run against (a gateway calls a ``persistence_app``'s ``app`` through an ASGI transport)."""

    url: str
    app: FastAPI


@contextmanager
def persistence_app_on(tmp: Path, database: str) -> Iterator[LocalService]:
    """The persistence service in this process, on ``database``: as ``persistence_on``'s."""
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp / 'chat.db'}"
        if database == "postgresql":
            url = stack.enter_context(fresh_postgres_database())
        env = {"API_KEY": PERSISTENCE_KEY, "DATABASE_URL": url, "LEASE_SECONDS": "2"}
        app = create_persistence_app(settings_from(PersistenceSettings, env))
        yield LocalService(stack.enter_context(serve(app, HttpToolsProtocol)), app)


@pytest.fixture(scope="module")
def persistence_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    with persistence_app_on(tmp_path_factory.mktemp("persistence"), "sqlite") as service:
        yield service


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def persistence_app_on_both(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalService]:
    """``persistence_app`` on SQLite, then on PostgreSQL, for a module whose tests must hold on both: it names it
    its ``persistence_app``."""
    with persistence_app_on(tmp_path_factory.mktemp("persistence"), request.param) as service:
        yield service


@contextmanager
def local_gateway(
    tmp: Path, persistence_app: LocalService | None, upstream_url: str | None, **extra: str
) -> Iterator[LocalService]:
    """A gateway in this process, set as ``gateway_env`` sets a process's; without ``persistence_app``, it calls
    ``API_BASE_URL`` (in ``extra``) over the network."""
    settings = settings_from(GatewaySettings, gateway_env(tmp, "http://persistence", upstream_url, **extra))
    transport = None
    if persistence_app is not None:
        transport = httpx.ASGITransport(persistence_app.app, raise_app_exceptions=False)
    app = create_app(settings, persistence_transport=transport)
    with serve(app, HttpToolsProtocol) as url:
        yield LocalService(url, app)


@pytest.fixture
def gateway(tmp_path: Path, persistence_app: LocalService, fake_openai_url: str) -> Iterator[LocalService]:
    """A gateway of its own for the test, in this process, on the module's ``persistence_app``."""
    with local_gateway(tmp_path, persistence_app, fake_openai_url) as gateway:
        yield gateway


@pytest.fixture
def store(persistence_app: LocalService) -> Iterator[httpx.Client]:
    """Reads what the in-process persistence service stored (``gateway``'s)."""
    with _reader(persistence_app.url) as client:
        yield client


def _reader(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"x-api-key": PERSISTENCE_KEY}, timeout=30)


@pytest.fixture
def gateway_process(
    tmp_path: Path, persistence: Service, _fake_openai_server: tuple[FastAPI, str], fake_openai: FastAPI
) -> Iterator[Service]:
    """A gateway in a process of its own, on the ``persistence`` process: for a test that kills, pauses or
    restarts one of them."""
    _, upstream = _fake_openai_server
    env = gateway_env(tmp_path, persistence.url, upstream)
    service = Service.uvicorn("chat_gateway.main:create_app", env, tmp_path / "gateway.log").start()
    yield service
    service.kill(signal.SIGTERM)


@pytest.fixture
def process_store(persistence: Service) -> Iterator[httpx.Client]:
    """Reads what the ``persistence`` process stored."""
    with _reader(persistence.url) as client:
        yield client


@dataclass
class Event:
    event: str
    id: str | None
    data: dict[str, Any]


def sse_events(response: httpx.Response) -> Iterator[Event]:
    """Parse a text/event-stream response as it arrives."""
    event, event_id, data = "message", None, list[str]()
    for line in response.iter_lines():
        if line == "":
            if data:
                yield Event(event, event_id, json.loads("\n".join(data)))
            event, event_id, data = "message", None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


@contextmanager
def streaming_chat(
    gateway: LocalService | Service, deltas: int = 1, **fields: object
) -> Iterator[tuple[str, Iterator[Event]]]:
    """A streamed chat, once its first ``deltas`` deltas have arrived: its answer's id and the rest of the events."""
    body = {"message": "hi", "stream": True, **fields}
    with httpx.stream("POST", f"{gateway.url}/chat", json=body, timeout=30) as response:
        events = sse_events(response)
        message_id = next(events).data["message_id"]
        for _ in range(deltas):
            next(e for e in events if e.event == "delta")
        yield message_id, events


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def read_message(store: httpx.Client, message_id: str) -> dict[str, Any]:
    """A message as persistence stored it."""
    response = store.get(f"/messages/{message_id}")
    assert response.status_code == 200, response.text
    message: dict[str, Any] = response.json()
    return message


def read_finished(store: httpx.Client, message_id: str) -> dict[str, Any]:
    """An answer as persistence stored it, once it has ended (complete or failed)."""
    finished: dict[str, Any] = wait_for(
        lambda: (m := read_message(store, message_id))["status"] in ("complete", "failed") and m
    )
    return finished


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def stored_message(**fields: Any) -> MessageDetail:
    """A message as persistence returns it, every field a test does not name defaulted."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "session_id": uuid.uuid4(),
        "role": MessageRole.ASSISTANT,
        "content": "",
        "context": None,
        "status": MessageStatus.IN_PROGRESS,
        "error": None,
        "rating": None,
        "model": None,
        "finish_reason": None,
        "usage": None,
        "options": None,
        "attempts": 0,
        "version": 1,
        "lease_owner": None,
        "lease_expires_at": None,
        "sent_at": now,
        "created_at": now,
        "updated_at": now,
    }
    return MessageDetail(**(values | fields))


class FakeStore:
    """An ``AnswerStore`` (persistence's messages) for a generation under test: each test's fake says what its
    appends do; reads of the answer or the history were not expected."""

    async def append(
        self,
        message_id: uuid.UUID,
        offset: int,
        text: str,
        *,
        owner: str,
        lease_seconds: float,
        finish: AnswerFinish | None = None,
        model: str | None = None,
    ) -> int:
        raise NotImplementedError

    async def get(self, message_id: uuid.UUID, scope: str | None = None) -> MessageDetail:
        raise AssertionError("the answer was not expected to be read")

    async def history_page(
        self, session_id: uuid.UUID, cursor: str | None, limit: int = 100
    ) -> tuple[list[MessageDetail], str | None]:
        raise AssertionError("the history was not expected to be read")
