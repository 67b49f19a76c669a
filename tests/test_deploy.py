"""What can be checked of the containers without a Docker engine."""

import contextlib
import json
import os
import re
import shutil
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
from testing.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILES = ["docker-compose.yaml", "docker-compose.chat.yaml"]
IMAGES: dict[str, tuple[str, type[BaseSettings], int]] = {
    "persistence": ("Dockerfile", PersistenceSettings, 8000),
    "gateway": ("Dockerfile.chat", GatewaySettings, 8100),
}


# What the compose files publish: the gateway to every address (it needs a key), the rest to this machine only.
PUBLISHED = {"persistence": "127.0.0.1:8000:8000", "gateway": "8100:8100"}
# Variables that would decide the gateway's mode or address from the developer's environment, not the test's.
OUTSIDE = ("CHAT_ADMIN_KEYS", "CHAT_API_KEYS", "JWT_JWKS_URL", "JWT_PUBLIC_KEY", "HOST", "UVICORN_HOST", "ALLOW_OPEN")


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


def _image_env(dockerfile: str) -> dict[str, str]:
    """The image's one-line ENV settings (NAME=value)."""
    return dict(re.findall(r"^ENV (\w+)=(\S+)$", _dockerfile(dockerfile), re.MULTILINE))


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
    assert set(services) == {"db", "persistence", "pgadmin", "gateway", "answer-log"}
    assert services["pgadmin"]["profiles"] == ["tools"]
    assert services["db"]["image"] == "postgres:16"
    assert services["persistence"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["gateway"]["environment"]["API_BASE_URL"] == "http://persistence:8000"
    # The answer log keeps every append on disk before acknowledging it, and is reached by the gateway only.
    assert services["answer-log"]["command"][1:] == ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    assert "ports" not in services["answer-log"]
    assert services["gateway"]["environment"]["ANSWER_LOG_URL"].endswith("redis://answer-log:6379/0}")


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
    assert compose_service["ports"] == [PUBLISHED[service]]
    for copied in re.findall(r"^COPY (?:--chmod=\d+ )?(\S+) ", text, re.MULTILINE):
        assert (ROOT / copied).exists(), copied


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"secrets", ".venv", "data", ".git"} <= set(ignored)


def test_persistence_waits_for_the_database_then_runs_the_image_command() -> None:
    command = _merged()["services"]["persistence"]["command"]
    assert command[:4] == ["./wait-for-it.sh", "db:5432", "--timeout=60", "--"]
    assert command[4:] == _cmd("Dockerfile")


@pytest.mark.slow
def test_wait_for_it_waits_for_a_port_then_runs_the_command(tmp_path: Path) -> None:
    port = free_port()
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
    closed = f"127.0.0.1:{free_port()}"
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


def _start_image(service: str, tmp_path: Path, **settings: str) -> tuple[subprocess.Popen[bytes], int]:
    """The image's command, as the image runs it (its ENV too), on a free port; persistence on SQLite."""
    dockerfile, _, _ = IMAGES[service]
    command = _cmd(dockerfile)
    port = free_port()  # the image's own port may be taken on a developer's machine
    command[command.index("--port") + 1] = str(port)
    assert command[0] == "uvicorn"
    secret = tmp_path / "api_key"
    secret.write_text("deploy-test-key\n")
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_KEY", "_KEY_FILE", "_URL"))}
    env = {k: v for k, v in env.items() if k.removesuffix("_FILE") not in OUTSIDE}
    env |= _image_env(dockerfile)
    env |= {"API_KEY_FILE": str(secret), "SECRETS_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path}/db"}
    process = subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env=env | settings,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return process, port


def _health(process: subprocess.Popen[bytes], port: int) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"did not start:\n{output[-3000:]}")
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("service", sorted(IMAGES))
def test_image_start_command_serves_health(service: str, tmp_path: Path) -> None:
    admin_keys = tmp_path / "gateway_admin_keys"
    admin_keys.write_text("deploy-test-admin-key\n")
    # The gateway as compose starts it: in keys mode (it would not start open on 0.0.0.0).
    settings = {"CHAT_ADMIN_KEYS_FILE": str(admin_keys)} if service == "gateway" else {}
    process, port = _start_image(service, tmp_path, **settings)
    try:
        response = _health(process, port)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    finally:
        _stop(process)


@pytest.mark.slow
def test_the_gateway_image_refuses_to_start_open_unless_told_and_says_what_to_do(tmp_path: Path) -> None:
    refused, port = _start_image("gateway", tmp_path)
    try:
        output, _ = refused.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        _stop(refused)
        pytest.fail("the gateway started open on 0.0.0.0")
    assert refused.returncode != 0
    message = output.decode()
    assert "chat_gateway: open mode on 0.0.0.0 (uvicorn's --host), not a loopback address" in message
    for remedy in ("CHAT_ADMIN_KEYS_FILE", "JWT_", "127.0.0.1", "ALLOW_OPEN=true"):
        assert remedy in message
    with socket.socket() as probe:  # it never listened: the port is still free
        probe.bind(("0.0.0.0", port))

    allowed, port = _start_image("gateway", tmp_path, ALLOW_OPEN="true")
    try:
        assert _health(allowed, port).status_code == 200
    finally:
        _stop(allowed)


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
    ports = {"PERSISTENCE_PORT": free_port(), "GATEWAY_PORT": free_port()}
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


def _published(port: str | dict[str, Any]) -> str:
    """The host address a compose port mapping publishes on (compose's short and long syntax)."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "0.0.0.0"))
    parts = str(port).rsplit(":", 2)
    return parts[0].strip("[]") if len(parts) == 3 else "0.0.0.0"


def test_nothing_but_the_gateway_is_published_beyond_this_machine() -> None:
    """Persistence's service key reaches every user's chats, pgAdmin's login is the database password: this
    machine only. The gateway reaches persistence by its name on app_network."""
    services = _merged()["services"]
    for name, service in services.items():
        if name != "gateway":
            for port in service.get("ports", []):
                assert _published(port) == "127.0.0.1", f"{name} is published on {port}"
    assert services["gateway"]["environment"]["API_BASE_URL"] == "http://persistence:8000"
    assert services["persistence"]["networks"] == services["gateway"]["networks"]


def _compose_env(service: dict[str, Any], secrets_dir: Path) -> dict[str, str]:
    """A service's environment as compose gives it, its Docker secrets read from ``secrets_dir``."""
    env = {}
    for variable, value in service["environment"].items():
        value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))  # nothing exported: the defaults
        if value.startswith("/run/secrets/"):
            value = str(secrets_dir / f"{value.removeprefix('/run/secrets/')}.txt")
        env[variable] = value
    return env


def test_compose_starts_the_gateway_in_keys_mode_with_the_admin_key_make_secrets_creates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets_dir = tmp_path / "secrets"
    create = [sys.executable, str(ROOT / "scripts" / "ensure_secrets.py"), str(secrets_dir)]
    subprocess.run(create, check=True, capture_output=True)
    admin_keys = secrets_dir / "gateway_admin_keys.txt"
    key = admin_keys.read_text().strip()
    assert len(key) >= 40  # 32 random bytes
    assert admin_keys.stat().st_mode & 0o777 == 0o600
    subprocess.run(create, check=True, capture_output=True)
    assert admin_keys.read_text().strip() == key  # never overwritten

    merged = _merged()
    gateway = merged["services"]["gateway"]
    assert gateway["environment"]["CHAT_ADMIN_KEYS_FILE"] == "/run/secrets/gateway_admin_keys"
    assert merged["secrets"]["gateway_admin_keys"] == {"file": "./secrets/gateway_admin_keys.txt"}
    # Nothing from the shell can turn it open, nor replace the key with an empty one.
    assert not {"CHAT_ADMIN_KEYS", "CHAT_API_KEYS", "ALLOW_OPEN"} & set(gateway["environment"])

    for name in OUTSIDE:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)
    (secrets_dir / "openai_api_key.txt").write_text("sk-test\n")  # the one secret the user brings
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "nothing-local"))
    for variable, value in _compose_env(gateway, secrets_dir).items():
        monkeypatch.setenv(variable, value)
    settings = GatewaySettings()  # API_KEY comes from its file
    assert settings.admin_keys == (key,)
    assert not settings.open_mode
    assert settings.open_exposure(_image_env("Dockerfile.chat")["HOST"]) is None

    # `make run` reads secrets/ itself, and must stay open: the generated key is not under a name it reads.
    for variable in gateway["environment"]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("SECRETS_DIR", str(secrets_dir))
    assert GatewaySettings().open_mode


def test_the_gateway_image_says_where_it_listens_as_its_command_binds_it() -> None:
    command = _cmd("Dockerfile.chat")
    assert _image_env("Dockerfile.chat")["HOST"] == command[command.index("--host") + 1] == "0.0.0.0"


def test_requirements_txt_is_the_run_time_lock_as_make_lock_writes_it(tmp_path: Path) -> None:
    """Deployments and scanners look for requirements.txt: it must say what requirements.lock says."""
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "lock"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    writes = [line for line in planned if line.rstrip().endswith("> requirements.txt")]
    assert len(writes) == 1, planned
    shutil.copy(ROOT / "requirements.lock", tmp_path)
    subprocess.run(["bash", "-c", writes[0]], cwd=tmp_path, check=True)  # no network: it copies the lock
    committed = (ROOT / "requirements.txt").read_text()
    assert committed == (tmp_path / "requirements.txt").read_text(), "requirements.txt is stale: run make lock"
    pins = [line for line in committed.splitlines() if not line.startswith("#")]
    assert "\n".join(pins) + "\n" == (ROOT / "requirements.lock").read_text()
