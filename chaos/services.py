"""The chaos run's processes: two persistence services and two gateways as users run them (uvicorn, each in its
process), and the two kinds of upstream; each can be killed, paused, resumed and started again."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KEY = "chaos-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    def __init__(self, name: str, command: list[str], env: dict[str, str], directory: Path, port: int) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log = directory / f"{name}.log"
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, health: str = "/health", timeout: float = 60) -> "Service":
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}{health}", timeout=1).status_code < 500:
                    return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} did not start:\n{tail}")
            time.sleep(0.05)

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def _uvicorn(app: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--factory", "--port", str(port), "--log-level", "warning"]


def _env(directory: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_KEY", "_KEY_FILE", "_URL"))}
    return env | {"SECRETS_DIR": str(directory), "API_KEY": KEY, "LOG_LEVEL": "WARNING", "RATE_LIMIT": "none"} | values


LEASE_SECONDS = 2.0

GATEWAY_SETTINGS = {
    "LEASE_SECONDS": str(LEASE_SECONDS),
    "RECOVERY_INTERVAL_SECONDS": "0.5",
    "FLUSH_INTERVAL_SECONDS": "0.2",
    "REATTACH_POLL_SECONDS": "0.1",
    "RETRY_ATTEMPTS": "10",
    "RETRY_MAX_SECONDS": "60",
    "RETRY_INITIAL_WAIT": "0.1",
    "RETRY_MAX_WAIT": "1",
    "PERSISTENCE_RETRY_ATTEMPTS": "4",
    "TURN_SETTLE_SECONDS": "20",
    "UPSTREAM_TIMEOUT_SECONDS": "10",
    "SHUTDOWN_GRACE_SECONDS": "0",
    "OPENAI_MODEL": "chaos",
    "OPENAI_API_KEY": "sk-chaos",
}


def persistence(name: str, directory: Path, database_url: str) -> Service:
    port = free_port()
    env = _env(directory, DATABASE_URL=database_url, LEASE_SECONDS=str(LEASE_SECONDS), DB_POOL_SIZE="4")
    return Service(name, _uvicorn("persistence.main:create_app", port), env, directory, port)


def gateway(
    name: str, directory: Path, persistence_url: str, upstream_url: str, continuation: str, answer_log: str | None
) -> Service:
    port = free_port()
    log = {"ANSWER_LOG_URL": answer_log} if answer_log else {}
    env = _env(
        directory,
        **log,
        API_BASE_URL=persistence_url,
        OPENAI_BASE_URL=f"{upstream_url}/v1",
        UPSTREAM_CONTINUATION=continuation,
        INSTANCE_ID=name,
        **GATEWAY_SETTINGS,
    )
    return Service(name, _uvicorn("chat_gateway.main:create_app", port), env, directory, port)


def upstream(name: str, directory: Path, mode: str, answers: str, seed: int) -> Service:
    port = free_port()
    command = [sys.executable, "-m", "chaos.upstream", str(port), "--mode", mode, "--answers", answers]
    command += ["--seed", str(seed)]
    return Service(name, command, _env(directory), directory, port)
