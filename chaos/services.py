"""The chaos run's processes: two persistence services and two gateways as users run them (uvicorn, each in its
process), and the two kinds of upstream, which each gateway reaches through an upstreams file (each model falling
back to the other upstream's); each can be killed, paused, resumed and started again."""

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
    "SHUTDOWN_GRACE_SECONDS": "0",
    "OPENAI_MODEL": "chaos",
}


def persistence(name: str, directory: Path, database_url: str) -> Service:
    env = _env(directory, DATABASE_URL=database_url, LEASE_SECONDS=str(LEASE_SECONDS), DB_POOL_SIZE="4")
    return _uvicorn(name, "persistence.main:create_app", env, directory)


# Each upstream serves a model of its own, which falls back to the other's; a gateway's "chaos" (what the clients
# ask for) is its preferred upstream's, so one gateway starts answers exactly and the other restarting, as before.
# A breaker that cools down in 5 s (30 by default) tries an upstream again soon after an outage ends. It opens
# after 12 failures in a row (5 by default): a quarter of this upstream's requests fail at random, far more than a
# real one's, and at 5 the upstream left up opened its breaker too while it carried all the chats (both cooling
# down, the answers then failed); an outage, every request refused, still opens it within a second.
UPSTREAM_ENTRY = """
[[upstreams]]
name = "{name}"
base_url = "{url}/v1"
api_key = "sk-chaos"
models = ["chaos-{mode}"]
continuation = "{mode}"
timeout_seconds = 10
failure_threshold = 12
cooldown_seconds = 5
"""
ROUTES = """
[aliases]
chaos = "chaos-{mode}"

[fallbacks]
chaos-exact = ["chaos-restart"]
chaos-restart = ["chaos-exact"]
"""


def upstreams_file(path: Path, upstreams: list[tuple[Service, str]], preferred: str) -> Path:
    """An UPSTREAMS_FILE of ``upstreams`` (each with how it continues), its "chaos" the ``preferred`` one's."""
    entries = [UPSTREAM_ENTRY.format(name=service.name, url=service.url, mode=mode) for service, mode in upstreams]
    path.write_text("".join(entries) + ROUTES.format(mode=preferred))
    return path


def gateway(name: str, directory: Path, persistence_url: str, upstreams: Path, answer_log: str | None) -> Service:
    log = {"ANSWER_LOG_URL": answer_log} if answer_log else {}
    env = _env(
        directory,
        **log,
        API_BASE_URL=persistence_url,
        UPSTREAMS_FILE=str(upstreams),
        INSTANCE_ID=name,
        **GATEWAY_SETTINGS,
    )
    return _uvicorn(name, "chat_gateway.main:create_app", env, directory)


def upstream(name: str, directory: Path, mode: str, answers: str, seed: int) -> Service:
    port = free_port()
    command = [sys.executable, "-m", "chaos.upstream", str(port), "--mode", mode, "--answers", answers]
    command += ["--seed", str(seed)]
    return Service(command, port, _env(directory), directory / f"{name}.log", name=name, timeout=60)
