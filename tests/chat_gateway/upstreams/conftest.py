import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from chat_gateway.clients.upstream import open_client
from chat_gateway.upstreams.config import UpstreamConfig
from chat_gateway.upstreams.upstream import Upstream
from testing.processes import Service
from testing.upstream import create_fake_openai, reset
from tests.chat_gateway.conftest import gateway_env
from tests.conftest import serve

NOWHERE = "http://127.0.0.1:1/v1"  # nothing listens there: its connection fails at once


@dataclass
class Fake:
    app: FastAPI
    url: str  # its base URL, /v1 included
    made: list[Upstream] = field(default_factory=list)

    def upstream(self, name: str, models: list[str] | str, **config: object) -> Upstream:
        fields = {"name": name, "base_url": self.url, "models": models, "continuation": "exact"} | config
        settings = UpstreamConfig.model_validate(fields)
        upstream = Upstream(settings, open_client("sk-fake", settings.base_url, settings.timeout_seconds))
        self.made.append(upstream)
        return upstream

    def models_asked(self) -> list[str]:
        return [request["model"] for request in self.app.state.requests]


@contextlib.contextmanager
def routed_gateway(tmp: Path, persistence: Service, upstreams: str, **env: str) -> Iterator[Service]:
    """A gateway process whose upstreams file is ``upstreams`` (the fakes' URLs in it), its default model alpha."""
    path = tmp / "upstreams.toml"
    path.write_text(upstreams)
    settings = gateway_env(tmp, persistence.url, None, UPSTREAMS_FILE=str(path), OPENAI_MODEL="alpha") | env
    service = Service.uvicorn("chat_gateway.main:create_app", settings, tmp / "gateway.log").start()
    try:
        yield service
    finally:
        service.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def _fakes() -> Iterator[list[Fake]]:
    with contextlib.ExitStack() as stack:
        apps = [create_fake_openai() for _ in range(3)]
        yield [Fake(app, f"{stack.enter_context(serve(app))}/v1") for app in apps]


@pytest.fixture
def fakes(_fakes: list[Fake]) -> list[Fake]:
    """Three fake upstreams (testing/upstream.py), each on a port of its own, their state reset."""
    for fake in _fakes:
        reset(fake.app)
    return _fakes


@pytest.fixture
async def clients_closed(_fakes: list[Fake]) -> AsyncIterator[None]:
    """The clients of the upstreams a test made of the fakes, closed on its own event loop."""
    yield
    for fake in _fakes:
        for upstream in fake.made:
            await upstream.client.close()
        fake.made.clear()


@pytest.fixture
def store(process_store: httpx.Client) -> httpx.Client:
    """What the routed gateways' persistence process stored: these gateways are processes of their own."""
    return process_store
