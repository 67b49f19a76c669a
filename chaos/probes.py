"""What the chaos run measures of the database itself, through the same multi-host connection string persistence
uses: writes acknowledged and then lost, and how soon answers move on after a failover."""

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

Query = Callable[..., list[tuple[Any, ...]]]


class AckProbe:
    """Commits numbered rows, one after another, to whichever node is primary; after the run, every row whose
    commit returned must be there. A commit that failed is unknown, not acknowledged: it may or may not be."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.acknowledged: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ack-probe", daemon=True)

    def start(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=3) as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS chaos_acks (n bigint PRIMARY KEY)")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=3) as connection:
                    while not self._stop.wait(0.01):
                        number += 1
                        connection.execute("INSERT INTO chaos_acks VALUES (%s)", (number,))
                        self.acknowledged.append(number)
            except psycopg.Error:
                self._stop.wait(0.05)  # the primary is gone, or not yet promoted: try the hosts again

    def lost(self, query: Query) -> int:
        present = {row[0] for row in query("SELECT n FROM chaos_acks")}
        return len(set(self.acknowledged) - present)


def watch_resumed(query: Query, promoted: float, resumed: list[float], never: list[int], limit: float = 30) -> None:
    """For each answer pending or in progress when the replica was promoted (at ``promoted``, time.monotonic()),
    how long until it moves on on the new primary: more of its text saved, or its end."""
    snapshot = _unfinished(query, None)
    while snapshot is None and time.monotonic() - promoted < limit:
        time.sleep(0.05)
        snapshot = _unfinished(query, None)
    waiting = snapshot or {}
    while waiting and time.monotonic() - promoted < limit:
        time.sleep(0.1)
        now = _unfinished(query, list(waiting))
        if now is None:
            continue
        for message_id, state in list(waiting.items()):
            if now.get(message_id) != state:
                resumed.append(time.monotonic() - promoted)
                del waiting[message_id]
    never.append(len(waiting))


def _unfinished(query: Query, ids: list[str] | None) -> dict[str, tuple[str, int]] | None:
    """(status, saved length) of the answers pending or in progress (``ids``: of those, whatever their status
    now); None while the database cannot be reached."""
    try:
        if ids is None:
            rows = query(
                "SELECT id::text, status, length(content) FROM messages "
                "WHERE role = 'assistant' AND status IN ('pending', 'in_progress')"
            )
        else:
            rows = query("SELECT id::text, status, length(content) FROM messages WHERE id::text = ANY(%s)", ids)
    except psycopg.Error:
        return None
    return {message_id: (status, length) for message_id, status, length in rows}
