"""The chaos run's primary and replica (chaos/cluster.py): a write acknowledged before the primary is killed is
on the promoted replica, persistence's engine reaches the new primary through the multi-host URL, and the fault
can happen again once the replica is rebuilt."""

import glob
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from chaos.cluster import Pair
from persistence.db import create_db_engine
from testing.ports import free_port

pytestmark = [pytest.mark.slow, pytest.mark.serial]


@pytest.fixture
def pair() -> Iterator[Pair]:
    if not (shutil.which("pg_basebackup") or glob.glob("/usr/lib/postgresql/*/bin/pg_basebackup")):
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup) are missing")
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup) are missing")
    # Not under pytest's tmp_path, which only its owner may enter: the cluster's own user (postgres, when run as
    # root) must reach its directory.
    directory = Path(tempfile.mkdtemp(prefix="chaos-pair-"))
    directory.chmod(0o755)
    cluster = Pair(directory / "postgres", (free_port(), free_port()))
    try:
        yield cluster.start()
    finally:
        cluster.destroy()
        shutil.rmtree(directory, ignore_errors=True)


def _write(engine: sa.Engine, value: int) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO acks VALUES (:n)"), {"n": value})


def _read(engine: sa.Engine) -> list[int]:
    with engine.connect() as connection:
        return [row[0] for row in connection.execute(sa.text("SELECT n FROM acks ORDER BY n"))]


def _eventually(engine: sa.Engine, value: int) -> None:
    """A write through the engine once the new primary accepts it: the first tries meet the dead primary's
    pooled connections (SQLAlchemy drops them all) or find no primary yet."""
    for _ in range(50):
        try:
            _write(engine, value)
            return
        except sa.exc.OperationalError:
            continue
    raise AssertionError("the engine never reached the new primary")


def _replicated(pair: Pair) -> list[int]:
    """The rows on the replica, once it has replayed the last commit (it had flushed it, which is what a commit
    waits for; replaying comes just after)."""
    replica = f"host=127.0.0.1 port={pair.replica.port} user=postgres dbname=postgres"
    with psycopg.connect(replica, autocommit=True) as connection:
        assert connection.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        for _ in range(100):
            rows = [row[0] for row in connection.execute("SELECT n FROM acks ORDER BY n")]
            if rows and rows[-1] == 4:
                break
            time.sleep(0.05)
        return rows


def test_a_failover_keeps_every_acknowledged_write_and_can_happen_again(pair: Pair) -> None:
    engine = create_db_engine(pair.url, pool_size=2)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE acks (n int PRIMARY KEY)"))
        _write(engine, 1)
        first_primary = pair.primary.port
        pair.kill_primary()
        with pytest.raises(sa.exc.OperationalError):
            _write(engine, 2)  # the primary is gone and the replica is read-only: no host accepts writes
        pair.promote_replica()
        _eventually(engine, 3)
        assert pair.primary.port != first_primary
        assert _read(engine) == [1, 3]
        pair.rebuild_replica()
        _write(engine, 4)
        assert _replicated(pair) == [1, 3, 4]
        pair.kill_primary()
        pair.promote_replica()
        _eventually(engine, 5)
        assert pair.primary.port == first_primary
        assert _read(engine) == [1, 3, 4, 5]
    finally:
        engine.dispose()


def test_commits_wait_for_the_replica(pair: Pair) -> None:
    rows = pair.primary.execute(
        psycopg.sql.SQL("SELECT application_name, sync_state FROM pg_stat_replication"),
    )
    assert rows == [(pair.replica.name, "sync")]
    settings = pair.primary.execute(psycopg.sql.SQL("SHOW synchronous_commit"))
    assert settings == [("on",)]
