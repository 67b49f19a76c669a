"""The service started the way `make run-persistence` and the container start it."""

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from testing.ports import free_port
from tests.conftest import fresh_postgres_database

pytestmark = pytest.mark.slow  # starts processes: left out of `make test-fast`


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"API_KEY", "API_KEY_FILE", "DATABASE_URL"}}
    return env | {"SECRETS_DIR": str(tmp_path / "secrets")} | values


def _uvicorn(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "persistence.main:create_app", "--factory", "--port", str(port)]


def test_missing_api_key_stops_start_up_with_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        _uvicorn(free_port()), env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "persistence: missing secret API_KEY: set API_KEY, or API_KEY_FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_serves_with_a_docker_style_secret_file_and_creates_the_sqlite_database(tmp_path: Path) -> None:
    secret = tmp_path / "api_key"
    secret.write_text("file-key\n")
    database = tmp_path / "data" / "chat.db"
    port = free_port()
    env = _env(tmp_path, API_KEY_FILE=str(secret), DATABASE_URL=f"sqlite:///{database}")
    process = subprocess.Popen(_uvicorn(port), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"service did not start: {process.stdout.read() if process.stdout else ''}")
            time.sleep(0.1)
        created = httpx.post(f"{base}/sessions", json={"title": "t"}, headers={"x-api-key": "file-key"})
        assert created.status_code == 201
        assert httpx.get(f"{base}/sessions", headers={"x-api-key": "wrong"}).status_code == 401
        assert database.exists()
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "file-key" not in output


class _Forwarder:
    """A TCP port that forwards to another once opened: a database that comes up after the service."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port = port
        self.target = target
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def open(self) -> None:
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(timeout=10)

    async def _serve(self) -> None:
        self.server = await asyncio.start_server(self._pipe_both, "127.0.0.1", self.port)

    async def _pipe_both(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def close(self) -> None:
        if hasattr(self, "server"):
            self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def test_started_before_its_database_it_serves_not_ready_then_connects_when_the_database_comes(
    tmp_path: Path,
) -> None:
    with fresh_postgres_database() as url:
        real = sa.make_url(url)
        port = free_port()
        forwarder = _Forwarder(port, (real.host or "127.0.0.1", real.port or 5432))
        late = real.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        env = _env(tmp_path, API_KEY="k", DATABASE_URL=late)
        service_port = free_port()
        process = subprocess.Popen(
            _uvicorn(service_port), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        base = f"http://127.0.0.1:{service_port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
            not_ready = httpx.get(f"{base}/health/ready")
            assert (not_ready.status_code, not_ready.json()["code"]) == (503, "not_ready")
            refused = httpx.get(f"{base}/sessions", headers={"x-api-key": "k"})
            assert (refused.status_code, refused.json()["code"]) == (503, "not_ready")
            forwarder.open()
            deadline = time.monotonic() + 30
            while httpx.get(f"{base}/health/ready").status_code != 200:
                assert time.monotonic() < deadline, "never connected"
                time.sleep(0.2)
            created = httpx.post(f"{base}/sessions", json={}, headers={"x-api-key": "k"})
            assert created.status_code == 201
        finally:
            process.terminate()
            output, _ = process.communicate(timeout=30)
            forwarder.close()
    assert "waiting for it" in output
    assert "ready" in output
