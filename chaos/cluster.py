"""The chaos run's PostgreSQL: a primary and a streaming replica, both throwaway clusters (initdb into a temporary
directory, free ports) that the run may stop, kill, promote and rebuild; never the machine's shared server.

A write is acknowledged only once the replica has it (``synchronous_commit`` on, ``synchronous_standby_names``
naming the replica), so a primary killed outright loses nothing it acknowledged, and its replica takes over
(``pg_ctl promote``). Persistence reaches whichever is primary through one multi-host URL.
"""

import glob
import os
import shutil
import signal
import subprocess
import time
from functools import cache
from pathlib import Path

import psycopg
from psycopg import sql


@cache
def _bin_directory() -> Path:
    """The directory of the server's programs, found by ``initdb``: every other program is taken from beside it,
    so that pg_basebackup is of the cluster's version (Debian's /usr/bin/pg_basebackup chooses for itself)."""
    found = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError("PostgreSQL's initdb is not installed (Debian: apt-get install postgresql)")
    return Path(os.path.realpath(found)).parent


def _binary(name: str) -> str:
    if (beside := _bin_directory() / name).exists():
        return str(beside)
    if (found := shutil.which(name)) is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")
    return found


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie, killed and not yet reaped by its parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


class Node:
    """One cluster: ``initdb`` (a primary) or ``copy_of`` one (a replica), ``start``, ``stop`` (fast: connections
    are cut, as in a restart), ``kill`` (SIGKILL to every process of it, as when its machine is lost)."""

    def __init__(self, directory: Path, name: str, port: int) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.name = name  # its application_name as a replica, which the primary's synchronous_standby_names names
        self.port = port
        self.killed = False  # its postmaster.pid is stale: no pg_ctl may act on it (the pid may be another's now)
        # PostgreSQL refuses to run as root: then the cluster is the postgres user's.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self._as, *command], check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def _fresh_directory(self) -> None:
        self.killed = False
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        if self._as:
            shutil.chown(self.directory, "postgres")

    def initdb(self) -> "Node":
        self._fresh_directory()
        self._run(_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        return self

    def copy_of(self, primary: "Node") -> "Node":
        """A new replica of ``primary`` (pg_basebackup), streaming from it once started."""
        self._fresh_directory()
        source = f"host=127.0.0.1 port={primary.port} user=postgres"
        self._run(
            _binary("pg_basebackup"),
            "-d",
            source,
            "-D",
            str(self.data),
            "-X",
            "stream",
            "--checkpoint=fast",
            "--no-sync",
        )
        # Written by hand rather than by -R: the primary knows this replica by its application_name.
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = '{source} application_name={self.name}'\n")
            conf.write("synchronous_standby_names = ''\n")  # the primary's, copied: not this one's to keep
        signal_file = self.data / "standby.signal"
        signal_file.touch(mode=0o600)
        if self._as:
            shutil.chown(signal_file, "postgres")
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        log = self.directory / "postgres.log"
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(log), "-w", "start")

    def stop(self) -> None:
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend (pg_ctl starts it in a session of its own): nothing of it
        acts after this, not even a backend finishing a commit."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        if os.getpgid(pid) != pid:
            raise RuntimeError(f"{self.name}'s postmaster ({pid}) leads no process group of its own")
        os.killpg(pid, signal.SIGKILL)
        self.killed = True
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)

    def promote(self) -> None:
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-w", "promote")

    def destroy(self) -> None:
        if not self.killed and (self.data / "postmaster.pid").exists():
            subprocess.run(
                [*self._as, _binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                check=False,
                capture_output=True,
            )
        shutil.rmtree(self.directory, ignore_errors=True)

    def execute(self, query: sql.SQL | sql.Composed, *params: object) -> list[tuple[object, ...]]:
        conninfo = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as connection:
            cursor = connection.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def set_synchronous_standby(self, name: str) -> None:
        """The replica whose flush a commit here waits for ('': none, commits alone)."""
        self.execute(sql.SQL("ALTER SYSTEM SET synchronous_standby_names = {}").format(sql.Literal(name)))
        self.execute(sql.SQL("SELECT pg_reload_conf()"))


class Pair:
    """A primary and its synchronous replica; ``failover`` kills the primary, promotes the replica and rebuilds
    a replica from it, so that it can happen again."""

    def __init__(self, directory: Path, ports: tuple[int, int]) -> None:
        self.nodes = [Node(directory / f"node{i}", f"node{i}", port) for i, port in enumerate(ports, 1)]
        self.primary, self.replica = self.nodes
        hosts, port_list = ",".join("127.0.0.1" for _ in ports), ",".join(map(str, ports))
        where = f"host={hosts}&port={port_list}&target_session_attrs=read-write"
        # What persistence is given: whichever of the two accepts writes.
        self.url = f"postgresql+psycopg://postgres@/postgres?{where}"
        self.conninfo = f"host={hosts} port={port_list} user=postgres dbname=postgres target_session_attrs=read-write"

    def start(self) -> "Pair":
        self.primary.initdb().start()
        self._rebuild_replica()
        return self

    def _rebuild_replica(self) -> None:
        """A replica from the primary, then the primary's commits wait for it (and none before it streams, which
        would stop every write until it did)."""
        self.replica.destroy()
        self.replica.copy_of(self.primary).start()
        self._until_replica("streaming")
        self.primary.set_synchronous_standby(self.replica.name)
        self._until_replica("sync")

    def _until_replica(self, state: str, timeout: float = 60) -> None:
        """Until the replica streams from the primary (``streaming``), or is its synchronous standby (``sync``)."""
        query = sql.SQL("SELECT state, sync_state FROM pg_stat_replication WHERE application_name = %s")
        deadline = time.monotonic() + timeout
        while not any(state in row for row in self.primary.execute(query, self.replica.name)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica {self.replica.name} is not {state} after {timeout} s")
            time.sleep(0.05)

    def kill_primary(self) -> None:
        self.primary.kill()

    def promote_replica(self) -> None:
        """The replica becomes the primary, committing alone until a new replica streams from it (as Patroni's
        non-strict synchronous mode does): a primary that waited for a replica being rebuilt would stop writes."""
        self.replica.promote()
        self.primary, self.replica = self.replica, self.primary
        self.primary.set_synchronous_standby("")

    def rebuild_replica(self) -> None:
        self._rebuild_replica()

    def restart_primary(self, down_seconds: float) -> None:
        self.primary.stop()
        time.sleep(down_seconds)
        self.primary.start()

    def destroy(self) -> None:
        for node in self.nodes:
            node.destroy()
