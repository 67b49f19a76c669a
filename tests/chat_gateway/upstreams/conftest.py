import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI

from chat_gateway.clients.upstream import open_client
from chat_gateway.upstreams.config import UpstreamConfig
from chat_gateway.upstreams.upstream import Upstream
from testing.upstream import create_fake_openai, reset
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
