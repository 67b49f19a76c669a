"""What the benchmarks share: the services' environment, wrk, seeding and where results go."""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).parent
RESULTS = HERE / "results"
KEY = "bench-key"  # the persistence API key, and the gateway's key to persistence


def service_env(tmp: str, **values: str) -> dict[str, str]:
    """The environment for a service under test: none of the caller's keys or URLs, quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_KEY", "_KEY_FILE", "_URL"))}
    return env | {"SECRETS_DIR": tmp, "LOG_LEVEL": "WARNING", **values}


@contextmanager
def scratch_directory() -> Iterator[str]:
    """A temporary directory for the services' secrets and logs. If the benchmark fails, the logs' last lines
    are printed first: they go with the directory, and they say why a service closed a connection or failed."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            yield tmp
        except BaseException:
            for log in sorted(Path(tmp).glob("*log")):
                lines = log.read_text(errors="replace").splitlines()[-40:]
                print(f"--- the last lines of {log.name}:", *lines, sep="\n", file=sys.stderr)
            raise


def checkpoint(engine: sa.Engine) -> None:
    """Flush what the seeding wrote to disk now, not during the first measurement."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
        db.execute(sa.text("CHECKPOINT"))


def save_results(benchmark: str, quick: bool, results: object) -> None:
    """bench/results/BENCHMARK.json (BENCHMARK-quick.json for --quick, which git ignores)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{benchmark}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")


def run_wrk(url: str, script: str, seconds: int, clients: int, *args: str) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 (ms) of bench/lua/SCRIPT; any failed request is an error."""
    command = ["wrk", f"-t{clients}", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", str(HERE / "lua" / script)]
    output = subprocess.run([*command, url, "--", *args], capture_output=True, text=True, check=True).stdout
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        raise RuntimeError(f"{script}: {match.group(1)} failed requests:\n{output}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", output, re.MULTILINE).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return rps, percentile("50"), percentile("99")


def code_env(code: str | None) -> dict[str, str]:
    """The environment that runs a service from the source tree ``code`` instead of this one: its packages first on
    the path, and not the current directory, which `python -m` would put before them. Empty for this tree."""
    return {} if code is None else {"PYTHONPATH": str(Path(code).resolve()), "PYTHONSAFEPATH": "1"}


def code_args(code: str | None) -> tuple[str, ...]:
    """uvicorn's arguments for the same: it puts its --app-dir (the current directory unless told) first on the
    path, before PYTHONPATH."""
    return () if code is None else ("--app-dir", str(Path(code).resolve()))


@contextmanager
def redis_server(tmp: str, port: int) -> Iterator[str]:
    """A Redis of its own, configured as docker-compose.chat.yaml's answer log (every append fsynced before it is
    acknowledged), its files in ``tmp``; yields its URL."""
    arguments = ["--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", ""]
    arguments += ["--appendonly", "yes", "--appendfsync", "always"]
    with (Path(tmp) / "redis.log").open("wb") as log:
        process = subprocess.Popen(["redis-server", *arguments], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def redis_durability(url: str) -> str:
    """How the Redis at ``url`` keeps what it acknowledged ("appendonly yes, appendfsync always" is compose's):
    without an fsync per append, the answer log's cost is not the one users pay."""
    import redis  # only the answer-log runs need it

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        config = client.config_get("appendonly") | client.config_get("appendfsync")
        return f"appendonly {config.get('appendonly')}, appendfsync {config.get('appendfsync')}"
    except redis.RedisError as exc:  # CONFIG may be renamed away: say so, and measure anyway
        return f"unknown ({exc})"
    finally:
        client.close()
