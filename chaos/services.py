"""The chaos run's processes: two persistence services and two gateways as users run them (uvicorn, each in its
process), and the two kinds of upstream; each can be killed, paused, resumed and started again."""

import os
import sys
from pathlib import Path

from testing.ports import free_port
from testing.processes import Service

KEY = "chaos-key"


def _uvicorn(name: str, app: str, env: dict[str, str], directory: Path) -> Service:
    # uvicorn's own HTTP protocol, not the Procfile's: the one docs/reliability.md's runs were made with.
    log = directory / f"{name}.log"
    return Service.uvicorn(app, env, log, "--log-level", "warning", name=name, as_deployed=False, timeout=60)


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
    env = _env(directory, DATABASE_URL=database_url, LEASE_SECONDS=str(LEASE_SECONDS), DB_POOL_SIZE="4")
    return _uvicorn(name, "persistence.main:create_app", env, directory)


def gateway(
    name: str, directory: Path, persistence_url: str, upstream_url: str, continuation: str, answer_log: str | None
) -> Service:
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
    return _uvicorn(name, "chat_gateway.main:create_app", env, directory)


def upstream(name: str, directory: Path, mode: str, answers: str, seed: int) -> Service:
    port = free_port()
    command = [sys.executable, "-m", "chaos.upstream", str(port), "--mode", mode, "--answers", answers]
    command += ["--seed", str(seed)]
    return Service(command, port, _env(directory), directory / f"{name}.log", name=name, timeout=60)
