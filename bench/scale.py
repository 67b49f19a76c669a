"""Scale (benchmark 2 of docs/benchmarks.md): does a session's size, or the table's, slow its requests?

p50 latency (one client, so queueing does not hide it) of reading the newest page and of appending to an
answer, in a session of 100,000 messages vs one of 100, with 1,000,000 messages in the table. The two
sessions are measured alternately, in the same run.

    python -m bench.scale [--quick] [--duration S] [--rounds N]
"""

import argparse
import os
import signal
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import sqlalchemy as sa

from bench.common import KEY, checkpoint, run_wrk, save_results, scratch_directory, service_env
from persistence.db import create_db_engine, migrate
from testing.databases import DEFAULT_TEST_DATABASE_URL, temporary_database
from testing.processes import Service

BIG, SMALL = 1, 2  # session numbers (ids as in bench/lua/common.lua)
SMALL_ANSWERS = 1000  # answers 1… are in the big session, 1001… in the small one


def _page_args(session: int, _round: int) -> tuple[str, ...]:
    return KEY, str(session)


def _append_args(session: int, round_: int) -> tuple[str, ...]:
    # append.lua with one thread appends to answers 1 + skip, 2 + skip, ...: 100 answers per round.
    skip = (0 if session == BIG else SMALL_ANSWERS) + round_ * 100
    return KEY, "0", "1", str(skip)


CASES = [("read newest page", "page_of.lua", _page_args), ("append text", "append.lua", _append_args)]


@dataclass
class Scale:
    operation: str
    big_session_messages: int
    table_messages: int
    big_p50_ms: float
    small_p50_ms: float
    ratio: float


def seed(url: str, big: int, table: int) -> None:
    """Session 1 holds ``big`` messages, session 2 holds 100, the others the rest of ``table`` (100 each)."""
    engine = create_db_engine(url)
    migrate(engine)
    others = (table - big - 100) // 100
    with engine.begin() as db:
        # The sessions are inserted with their newest activity already set: the trigger that keeps it
        # would update one row 100,000 times in one transaction, most of the seeding's time.
        db.execute(sa.text("ALTER TABLE messages DISABLE TRIGGER messages_touch_session"))
        session_id = "('00000000-0000-0000-0000-' || lpad(n::text, 12, '0'))::uuid"
        db.execute(
            sa.text(
                f"INSERT INTO sessions (id, user_id, title, is_favorite, created_at, updated_at) "
                f"SELECT {session_id}, 'bench', 'Session ' || n, false, now(), now() "
                f"FROM generate_series(1, :count) n"
            ),
            {"count": others + 2},
        )
        insert = sa.text(
            "INSERT INTO messages (id, session_id, role, content, status, attempts, version, "
            "sent_at, created_at, updated_at) "
            f"SELECT gen_random_uuid(), {session_id}, CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END, "
            "'seed text number ' || i, 'complete', 0, 1, now(), "
            "now() - (CAST(:per AS int) - i) * interval '1 millisecond', now() "
            "FROM generate_series(CAST(:first AS int), CAST(:last AS int)) n, generate_series(1, CAST(:per AS int)) i"
        )
        db.execute(insert, {"first": BIG, "last": BIG, "per": big})
        db.execute(insert, {"first": SMALL, "last": SMALL + others, "per": 100})
        db.execute(
            sa.text(
                "INSERT INTO messages (id, session_id, role, content, status, attempts, version, lease_owner, "
                "lease_expires_at, sent_at, created_at, updated_at) "
                "SELECT ('00000000-0000-0000-0001-' || lpad(a::text, 12, '0'))::uuid, "
                "('00000000-0000-0000-0000-' || lpad(CASE WHEN a > :small THEN 2 ELSE 1 END::text, 12, '0'))::uuid, "
                "'assistant', '', 'in_progress', 1, 1, NULL, now() + interval '1 day', now(), now(), now() "
                "FROM generate_series(1, 2 * :small) a"
            ),
            {"small": SMALL_ANSWERS},
        )
        db.execute(sa.text("ALTER TABLE messages ENABLE TRIGGER messages_touch_session"))
        db.execute(sa.text("ANALYZE"))
    checkpoint(engine)
    engine.dispose()


def main(argv: list[str] | None = None) -> list[Scale]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller table, a second each")
    parser.add_argument("--duration", type=int, default=3, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))
    args = parser.parse_args(argv)
    big, table = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    seconds, rounds = (1, 1) if args.quick else (args.duration, args.rounds)
    results = []
    with (
        temporary_database(sa.make_url(args.database_url), prefix="bench") as url,
        scratch_directory() as tmp,
    ):
        print(f"seeding {table:,} messages ...", flush=True)
        seed(url, big, table)
        env = service_env(tmp, API_KEY=KEY, DATABASE_URL=url)
        service = Service.uvicorn("persistence.main:create_app", env, Path(tmp) / "log").start()
        try:
            for name, script, args_for in CASES:
                for session in (BIG, SMALL):  # warm-up, on answers of its own
                    run_wrk(service.url, script, 1, 1, *args_for(session, 9))
                big_p50, small_p50 = [], []
                for n in range(rounds):  # alternating, so noise hits both sides of the ratio
                    big_p50.append(run_wrk(service.url, script, seconds, 1, *args_for(BIG, n))[1])
                    small_p50.append(run_wrk(service.url, script, seconds, 1, *args_for(SMALL, n))[1])
                b, s = statistics.median(big_p50), statistics.median(small_p50)
                results.append(Scale(name, big, table, b, s, b / s))
        finally:
            service.kill(signal.SIGTERM)
    print(f"{'operation':18} {'big p50 ms':>10} {'small p50 ms':>12} {'ratio':>6}  (target <= 1.3)")
    for r in results:
        print(f"{r.operation:18} {r.big_p50_ms:10.2f} {r.small_p50_ms:12.2f} {r.ratio:6.2f}")
    save_results("scale", args.quick, [asdict(r) for r in results])
    return results


if __name__ == "__main__":
    main()
