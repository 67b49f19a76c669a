"""The processes the gateway benchmarks run, each as users run it: the fake upstream, the services (from this
source tree or another one), LiteLLM's proxy, and what /proc says of them."""

import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import KEY, code_args, code_env, redis_server, service_env
from testing.ports import free_port
from testing.processes import Service

CHUNKS = 200  # tokens per answer, one per upstream chunk


@contextmanager
def upstream(*args: str) -> Iterator[str]:
    """bench.upstream in its own process; yields its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "bench.upstream", str(port), "--chunks", str(CHUNKS), *args]
    with Service(command, port, name="the bench upstream", ready="/stats", timeout=20) as service:
        yield service.url


# Its proxy refuses to start without a master key, or with one this short: "sk-bench".
LITELLM_KEY = "sk-bench-" + "0" * 32


@contextmanager
def litellm(tmp: str, command: str, upstream_url: str) -> Iterator[tuple[str, int]]:
    """LiteLLM's proxy, the alternative benchmark 3 compares with, in front of the upstream; yields its URL
    and process id."""
    port = free_port()
    config = Path(tmp) / "litellm.yaml"
    model = {"model": "openai/bench", "api_base": f"{upstream_url}/v1", "api_key": "sk-bench"}
    config.write_text(json.dumps({"model_list": [{"model_name": "bench", "litellm_params": model}]}))  # JSON is YAML
    # A local copy of its model price list: it would fetch one from GitHub at start-up.
    env = os.environ | {"LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    arguments = ["--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--telemetry", "False"]
    log = Path(tmp) / "litellm.log"
    with Service(
        [command, *arguments], port, env, log, name="LiteLLM's proxy", ready="/health/liveliness", timeout=120
    ) as proxy:
        yield proxy.url, proxy.pid


@contextmanager
def gateway(
    tmp: str,
    persistence_url: str,
    upstream_url: str,
    answer_log: str | None = None,
    code: str | None = None,
    **settings: str,
) -> Iterator[Service]:
    """A gateway, with the answer log at ``answer_log`` if given, from the source tree ``code`` if given, with
    any other ``settings`` (UPSTREAMS_FILE...)."""
    log = {} if answer_log is None else {"ANSWER_LOG_URL": answer_log}
    env = service_env(
        tmp,
        RATE_LIMIT="1000000/second",  # the default suits real clients, not a load generator
        API_KEY=KEY,
        API_BASE_URL=persistence_url,
        OPENAI_API_KEY="sk-bench",
        OPENAI_BASE_URL=f"{upstream_url}/v1",
        OPENAI_MODEL="bench",
        RETRY_INITIAL_WAIT="0",
        RETRY_MAX_WAIT="0",
        **log,
        **code_env(code),
        **settings,
    )
    log_file = Path(tmp) / f"gateway-{free_port()}.log"
    service = Service.uvicorn("chat_gateway.main:create_app", env, log_file, *code_args(code)).start()
    try:
        yield service
    finally:
        service.kill(signal.SIGTERM)


def persistence_service(tmp: str, database_url: str, code: str | None = None) -> Service:
    """Persistence on ``database_url``, from the source tree ``code`` if given, started."""
    env = service_env(tmp, API_KEY=KEY, DATABASE_URL=database_url, **code_env(code))
    arguments = ("--workers", str(os.cpu_count() or 2), *code_args(code))
    return Service.uvicorn(
        "persistence.main:create_app", env, Path(tmp) / f"persistence-{free_port()}.log", *arguments
    ).start()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@contextmanager
def answer_log_at(tmp: str, where: str | None) -> Iterator[str | None]:
    """The answer log's URL: none, the one given, or (``compose``) a redis-server of this run's own."""
    if where == "compose":
        with redis_server(tmp, free_port()) as url:
            yield url
    else:
        yield where
