"""Persistence throughput against the database ceiling (benchmark 1 of docs/benchmarks.md).

For each operation the API is driven by wrk (a separate process, one connection per thread) and the raw
statement behind it by pgbench, in the same run and at the same concurrency. Each API figure is reported
as a fraction of its raw figure, the number that holds on a shared, noisy machine.

    python -m bench.persistence_throughput [--quick] [--duration S] [--rounds N] [--concurrency N]
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import sqlalchemy as sa

from bench.common import HERE, KEY, checkpoint, run_wrk, save_results, scratch_directory, service_env
from persistence.db import create_db_engine, migrate
from testing.databases import DEFAULT_TEST_DATABASE_URL, temporary_database
from testing.processes import Service

ANSWERS_PER_CLIENT = 400  # appends rotate over these, so no answer grows past a few KiB

# name, wrk script, pgbench script, target (API rate / raw rate)
SCENARIOS = [
    ("create message", "create.lua", "create.sql", 0.15),
    ("append text", "append.lua", "append.sql", 0.15),
    ("read 50 messages", "page.lua", "page.sql", 0.08),
    ("list sessions", "sessions.lua", "sessions.sql", None),
]


@dataclass
class Result:
    name: str
    api_rps: float
    api_p50_ms: float
    api_p99_ms: float
    raw_tps: float
    raw_avg_ms: float
    ratio: float
    target: float | None


def seed(url: str, sessions: int, per_session: int, clients: int) -> None:
    engine = create_db_engine(url)
    migrate(engine)
    with engine.begin() as db:
        db.execute(
            sa.text(
                "INSERT INTO sessions (id, user_id, title, is_favorite, created_at, updated_at) "
                "SELECT ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid, 'bench', 'Session ' || n, "
                "n % 10 = 0, now() - n * interval '1 minute', now() - n * interval '1 minute' "
                "FROM generate_series(1, :sessions) n"
            ),
            {"sessions": sessions},
        )
        db.execute(
            sa.text(
                "INSERT INTO messages (id, session_id, role, content, status, attempts, version, "
                "sent_at, created_at, updated_at) "
                "SELECT gen_random_uuid(), ('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid, "
                "CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END, repeat('seed text ', 20), 'complete', "
                "0, 1, now(), now() - (1000000 - i) * interval '1 millisecond', now() "
                "FROM generate_series(1, :sessions) n, generate_series(1, :per) i"
            ),
            {"sessions": sessions, "per": per_session},
        )
        # Answers being generated, for the appends: 0001-… ids, several per client.
        db.execute(
            sa.text(
                "INSERT INTO messages (id, session_id, role, content, status, attempts, version, lease_owner, "
                "lease_expires_at, sent_at, created_at, updated_at) "
                "SELECT ('00000000-0000-0000-0001-' || lpad(n::text, 12, '0'))::uuid, "
                "'00000000-0000-0000-0000-000000000001'::uuid, 'assistant', '', 'in_progress', 1, 1, NULL, "
                "now() + interval '1 day', now(), now(), now() FROM generate_series(1, :answers) n"
            ),
            {"answers": clients * ANSWERS_PER_CLIENT},
        )
        db.execute(sa.text("ANALYZE"))
    checkpoint(engine)
    engine.dispose()


def run_pgbench(url: str, script: str, seconds: int, clients: int, sessions: int) -> tuple[float, float]:
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    command = ["pgbench", "-n", f"-c{clients}", f"-j{min(clients, os.cpu_count() or 2)}", f"-T{seconds}"]
    command += ["-D", f"sessions={sessions}", "-D", f"clients={clients}", "-f", str(HERE / "sql" / script), dsn]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    tps = float(re.search(r"tps = ([\d.]+)", output).group(1))  # type: ignore[union-attr]
    latency = float(re.search(r"latency average = ([\d.]+) ms", output).group(1))  # type: ignore[union-attr]
    return tps, latency


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds each: checks the harness only")
    parser.add_argument("--duration", type=int, default=3, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="API and raw measured alternately, median kept")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))
    args = parser.parse_args(argv)
    seconds, rounds = (1, 1) if args.quick else (args.duration, args.rounds)
    sessions, per_session = (50, 60) if args.quick else (1000, 60)
    results = []
    with (
        temporary_database(sa.make_url(args.database_url), prefix="bench") as url,
        scratch_directory() as tmp,
    ):
        seed(url, sessions, per_session, args.concurrency)
        env = service_env(tmp, API_KEY=KEY, DATABASE_URL=url)
        service = Service.uvicorn("persistence.main:create_app", env, Path(tmp) / "log", "--workers", str(args.workers))
        service.start()
        try:
            for name, lua, sql, target in SCENARIOS:
                lua_args = (KEY, str(sessions), str(args.concurrency))
                band = ANSWERS_PER_CLIENT // (rounds + 1)  # appends of each run go to answers of their own
                # Warm-up: connections opened, statements cached in every worker.
                run_wrk(service.url, lua, 1, args.concurrency, *lua_args, str(rounds * band))
                api, raw = [], []
                # Alternating, so a noisy neighbour slows both sides of a ratio, not one.
                for n in range(rounds):
                    api.append(run_wrk(service.url, lua, seconds, args.concurrency, *lua_args, str(n * band)))
                    raw.append(run_pgbench(url, sql, seconds, args.concurrency, sessions))
                rps, p50, p99 = (statistics.median(values) for values in zip(*api, strict=True))
                tps, avg = (statistics.median(values) for values in zip(*raw, strict=True))
                ratio = statistics.median(a[0] / b[0] for a, b in zip(api, raw, strict=True))
                results.append(Result(name, rps, p50, p99, tps, avg, ratio, target))
        finally:
            service.kill(signal.SIGTERM)  # SIGKILL would orphan the workers
    print(f"{'operation':18} {'API req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'raw tps':>9} {'ratio':>6} {'target':>7}")
    for result in results:
        goal = f">= {result.target}" if result.target else "-"
        figures = f"{result.api_rps:10.0f} {result.api_p50_ms:8.2f} {result.api_p99_ms:8.2f}"
        print(f"{result.name:18} {figures} {result.raw_tps:9.0f} {result.ratio:6.3f} {goal:>7}")
    save_results("persistence_throughput", args.quick, [asdict(r) for r in results])
    return results


if __name__ == "__main__":
    main()
