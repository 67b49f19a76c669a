import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Literal, NoReturn

import pytest
import redis
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI

from testing.databases import DEFAULT_TEST_DATABASE_URL, temporary_database

DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"

# `pytest --routes-covered` (make test-fast): the run fails if a gateway route went unexercised.
pytest_plugins = ["testing.route_coverage"]


def unreachable(message: str) -> NoReturn:
    """A service some tests need is down: they skip, or fail under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def postgres_url_or_skip() -> sa.URL:
    """PostgreSQL's URL from TEST_DATABASE_URL; unreachable, it skips, or fails under CI=true."""
    url = sa.make_url(os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        unreachable(f"PostgreSQL unreachable at {url.render_as_string(hide_password=True)}: {exc.orig}")
    finally:
        engine.dispose()
    return url


def redis_url_or_skip() -> str:
    """Redis's URL from TEST_REDIS_URL; unreachable, it skips, or fails under CI=true."""
    return reachable_redis(os.environ.get("TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL))


def reachable_redis(url: str, named: str = "TEST_REDIS_URL") -> str:
    """``url``, once a Redis answers there; unreachable, it skips, or fails under CI=true (``named``: the setting)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        unreachable(f"Redis unreachable at {url} ({named}): {exc}")
    finally:
        client.close()
    return url


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards."""
    with temporary_database(postgres_url_or_skip()) as url:
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory) -> Iterator[str]:
    """Each test using this runs once on the embedded SQLite default and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        return
    with fresh_postgres_database() as url:
        yield url


class _PromptServer(uvicorn.Server):
    """uvicorn's server, stopped as soon as it is told to. uvicorn notices ``should_exit`` at its next 0.1-s tick,
    then waits a fixed 0.1 s and polls connections every 0.1 s: about 0.2 s per stop, paid by every test that
    serves a gateway of its own (a fifth of make test-fast's). The steps and their order are uvicorn's."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await super().startup(sockets)

    def stop(self) -> None:
        """From any thread: exit now rather than at the next tick."""
        self.should_exit = True
        if (loop := getattr(self, "_loop", None)) is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # its loop ended in between
                loop.call_soon_threadsafe(self._wake.set)

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        # Answers still streaming end first, as under uvicorn (no graceful-shutdown timeout is set here); polled, as
        # uvicorn does, for want of an event when a connection ends.
        while self.server_state.connections or self.server_state.tasks:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()


@contextmanager
def serve(app: FastAPI, http: type[asyncio.Protocol] | Literal["auto"] = "auto") -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; yields its base URL. ``http``: uvicorn's
    protocol class (the services' own, as deployed: ``shared.server.HttpToolsProtocol``)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", http=http)
    server = _PromptServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        # As long as a stopped service process is waited for: an app still draining (a gateway's answers, for
        # up to SHUTDOWN_GRACE_SECONDS) must not go on beside the next test, taking the fake upstream's plans.
        thread.join(timeout=30)
        if thread.is_alive():
            raise RuntimeError("test server did not stop within 30 s")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Each phase's report on its test (``item.rep_call``...): a fixture's teardown can tell whether the test
    failed, to keep what it saw (the browser tests' screenshots)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
