"""What can be checked of the containers without a Docker engine."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic_settings import BaseSettings

from chat_gateway.config import Settings as GatewaySettings
from persistence.config import Settings as PersistenceSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILES = ["docker-compose.yaml", "docker-compose.chat.yaml"]
IMAGES: dict[str, tuple[str, type[BaseSettings], int]] = {
    "persistence": ("Dockerfile", PersistenceSettings, 8000),
    "gateway": ("Dockerfile.chat", GatewaySettings, 8100),
}


def _compose(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return loaded


def _merged() -> dict[str, Any]:
    """What `docker compose -f a -f b` sees: top-level maps merged, a service defined once."""
    merged: dict[str, Any] = {}
    for name in COMPOSE_FILES:
        for section, entries in _compose(name).items():
            for key, value in (entries or {}).items():
                existing = merged.setdefault(section, {}).get(key)
                assert section != "services" or existing is None, f"service {key} defined twice"
                assert existing in (None, value), f"{section}.{key} differs between files"
                merged[section][key] = value
    return merged


def _dockerfile(name: str) -> str:
    return (ROOT / name).read_text()


def _cmd(dockerfile: str) -> list[str]:
    match = re.search(r"^CMD (\[.*\])$", _dockerfile(dockerfile), re.MULTILINE)
    assert match, f"{dockerfile} has no exec-form CMD"
    command: list[str] = json.loads(match.group(1))
    return command


def test_each_compose_file_runs_alone_on_the_shared_external_network() -> None:
    for name in COMPOSE_FILES:
        compose = _compose(name)
        assert compose["networks"] == {"app_network": {"external": True}}
        for service in compose["services"].values():
            assert service["networks"] == ["app_network"]


def test_files_merge_into_the_whole_system() -> None:
    services = _merged()["services"]
    assert set(services) == {"db", "persistence", "pgadmin", "gateway"}
    assert services["pgadmin"]["profiles"] == ["tools"]
    assert services["db"]["image"] == "postgres:16"
    assert services["persistence"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["gateway"]["environment"]["API_BASE_URL"] == "http://persistence:8000"


def test_every_secret_has_a_committed_example_and_is_mounted_where_the_code_reads_it() -> None:
    merged = _merged()
    for name, secret in merged["secrets"].items():
        path = ROOT / secret["file"]
        assert path.parent == ROOT / "secrets"
        assert path.name == f"{name}.txt"
        assert (ROOT / "secrets" / f"{name}.txt.example").is_file()
    for service in merged["services"].values():
        for variable, value in (service.get("environment") or {}).items():
            if variable.endswith("_FILE") and str(value).startswith("/run/secrets/"):
                assert str(value).removeprefix("/run/secrets/") in service["secrets"], variable


def test_every_variable_given_to_a_service_is_a_setting_it_reads() -> None:
    services = _merged()["services"]
    for service, (_, settings, _) in IMAGES.items():
        fields = {name.upper() for name in settings.model_fields}
        for variable in services[service]["environment"]:
            assert variable.removesuffix("_FILE") in fields, f"{service} does not read {variable}"
    required_secrets = {"API_KEY_FILE"}
    assert required_secrets <= set(services["persistence"]["environment"])
    assert {"API_KEY_FILE", "OPENAI_API_KEY_FILE"} <= set(services["gateway"]["environment"])


@pytest.mark.parametrize("service", sorted(IMAGES))
def test_dockerfile_matches_the_service(service: str) -> None:
    dockerfile, _, port = IMAGES[service]
    text = _dockerfile(dockerfile)
    assert "FROM python:3.12-slim" in text
    assert re.search(
        r"^COPY requirements.lock .\nRUN pip install --require-hashes -r requirements.lock$", text, re.MULTILINE
    )
    assert re.search(r"^USER app$", text, re.MULTILINE)
    assert f"EXPOSE {port}" in text
    assert f"http://127.0.0.1:{port}/health" in text
    assert "secret" not in text.lower().replace("secrets come at run time", "")
    command = _cmd(dockerfile)
    assert command[command.index("--port") + 1] == str(port)
    compose_service = _merged()["services"][service]
    assert compose_service["build"]["dockerfile"] == dockerfile
    assert compose_service["ports"] == [f"{port}:{port}"]
    for copied in re.findall(r"^COPY (?:--chmod=\d+ )?(\S+) ", text, re.MULTILINE):
        assert (ROOT / copied).exists(), copied


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"secrets", ".venv", "data", ".git"} <= set(ignored)


def test_persistence_waits_for_the_database_then_runs_the_image_command() -> None:
    command = _merged()["services"]["persistence"]["command"]
    assert command[:4] == ["./wait-for-it.sh", "db:5432", "--timeout=60", "--"]
    assert command[4:] == _cmd("Dockerfile")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_wait_for_it_waits_for_a_port_then_runs_the_command(tmp_path: Path) -> None:
    port = _free_port()
    server = socket.socket()

    def open_later() -> None:
        time.sleep(1.5)
        server.bind(("127.0.0.1", port))
        server.listen()

    opener = threading.Thread(target=open_later)
    opener.start()
    marker = tmp_path / "ran"
    started = time.monotonic()
    try:
        result = subprocess.run(
            ["sh", str(ROOT / "wait-for-it.sh"), f"127.0.0.1:{port}", "--timeout=20", "--", "touch", str(marker)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        opener.join()
        server.close()
    assert result.returncode == 0, result.stderr
    assert marker.exists()
    assert time.monotonic() - started >= 1.5


def _wait_for_it(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(ROOT / "wait-for-it.sh"), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.slow
def test_wait_for_it_times_out_on_a_closed_port(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    closed = f"127.0.0.1:{_free_port()}"
    strict = _wait_for_it(closed, "--timeout=2", "--strict", "--", "touch", str(marker))
    assert strict.returncode == 124
    assert "timeout occurred after waiting 2 seconds" in strict.stderr
    assert "refusing to execute" in strict.stderr
    assert not marker.exists()
    assert _wait_for_it(closed, "-t", "1").returncode == 124
    # Without --strict the command runs anyway, as the widely used script does.
    assert _wait_for_it(closed, "-t", "1", "--", "touch", str(marker)).returncode == 0
    assert marker.exists()
    assert _wait_for_it("nohostport").returncode == 2
    assert _wait_for_it(closed, "-t", "soon").returncode == 2


@pytest.mark.parametrize(
    "args",
    [
        ["{host}:{port}", "-t", "5"],
        ["-h", "{host}", "-p", "{port}", "-t", "5", "-s"],
        ["--host={host}", "--port={port}", "--timeout=5", "--strict", "--quiet"],
        ["-q", "{host}:{port}", "-s", "-t", "5"],
    ],
)
def test_wait_for_it_takes_the_usual_interface(args: list[str], tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = str(server.getsockname()[1])
        marker = tmp_path / "ran"
        given = [arg.format(host="127.0.0.1", port=port) for arg in args]
        result = _wait_for_it(*given, "--", "touch", str(marker))
    assert result.returncode == 0, result.stderr
    assert marker.exists()
    assert (result.stderr == "") is ("-q" in args or "--quiet" in given)


@pytest.mark.slow
@pytest.mark.parametrize("service", sorted(IMAGES))
def test_image_start_command_serves_health(service: str, tmp_path: Path) -> None:
    dockerfile, _, _ = IMAGES[service]
    command = _cmd(dockerfile)
    port = _free_port()  # the image's own port may be taken on a developer's machine
    command[command.index("--port") + 1] = str(port)
    assert command[0] == "uvicorn"
    secret = tmp_path / "api_key"
    secret.write_text("deploy-test-key\n")
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_KEY", "_KEY_FILE", "_URL"))}
    env |= {"API_KEY_FILE": str(secret), "SECRETS_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path}/db"}
    process = subprocess.Popen(
        [sys.executable, "-m", *command], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"{service} did not start")
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def _serving(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "sig"),
    [("run-persistence", signal.SIGKILL), ("run-persistence", signal.SIGHUP), ("run", signal.SIGKILL)],
)
def test_a_killed_runner_leaves_no_server_behind(target: str, sig: signal.Signals, tmp_path: Path) -> None:
    """`make run…` killed with its process group (or its terminal closed): its servers go too, ports freed."""
    ports = {"PERSISTENCE_PORT": _free_port(), "GATEWAY_PORT": _free_port()}
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_KEY", "_KEY_FILE", "_URL"))}
    env |= {name: str(port) for name, port in ports.items()} | {"DATABASE_URL": f"sqlite:///{tmp_path}/db"}
    runner = subprocess.Popen(
        ["make", "--no-print-directory", target],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, as a terminal gives it
    )
    started = [ports["PERSISTENCE_PORT"]] + ([ports["GATEWAY_PORT"]] if target == "run" else [])
    try:
        deadline = time.monotonic() + 120
        while not all(_serving(port) for port in started):
            assert runner.poll() is None, f"make {target} exited"
            assert time.monotonic() < deadline, f"make {target} did not serve"
            time.sleep(0.2)
        os.killpg(runner.pid, sig)
        runner.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_serving(port) for port in started):
            assert time.monotonic() < deadline, "a server outlived its runner"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner.pid, signal.SIGKILL)


def test_the_images_get_run_time_dependencies_only_locked_with_hashes() -> None:
    """pyproject.toml's dependencies are the source of truth; the locks pin everything, each file with its hash."""
    locked = {}
    for name in ("requirements.lock", "requirements-dev.lock"):
        text = (ROOT / name).read_text()
        packages = re.findall(r"^([a-z0-9][a-z0-9._-]*)==", text, re.MULTILINE)
        assert packages, name
        assert text.count("--hash=sha256:") >= len(packages), name  # every pin carries its hashes
        locked[name] = set(packages)
    assert {"fastapi", "openai", "pyjwt", "cachetools"} <= locked["requirements.lock"]
    # The terminal client's libraries are the project's own: `uv tool install .` puts a working `chat` on the PATH.
    assert {"httpx-sse", "prompt-toolkit", "rich"} <= locked["requirements.lock"]
    assert not {"honcho", "pytest", "ruff", "mypy", "uv", "pexpect", "playwright"} & locked["requirements.lock"]
    assert {"honcho", "pytest", "playwright"} <= locked["requirements-dev.lock"]
