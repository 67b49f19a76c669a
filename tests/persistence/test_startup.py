"""The service started the way `make run-persistence` and the container start it."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"API_KEY", "API_KEY_FILE", "DATABASE_URL"}}
    return env | {"SECRETS_DIR": str(tmp_path / "secrets")} | values


def _uvicorn(port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "persistence.main:create_app", "--factory", "--port", str(port)]


def test_missing_api_key_stops_start_up_with_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        _uvicorn(_free_port()), env=_env(tmp_path), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "persistence: missing secret API_KEY: set API_KEY, or API_KEY_FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_serves_with_a_docker_style_secret_file_and_creates_the_sqlite_database(tmp_path: Path) -> None:
    secret = tmp_path / "api_key"
    secret.write_text("file-key\n")
    database = tmp_path / "data" / "chat.db"
    port = _free_port()
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
