"""The chaos run: chats through two gateways while processes die, pause and restart, the database fails over
and an upstream goes down; then every answer checked.

Two persistence processes on a throwaway PostgreSQL primary with a synchronous streaming replica, two gateways
writing through an answer log in Redis, two upstreams that sample (new words on every request), one continuing
exactly and one restarting and repeating, each gateway preferring one and falling back to the other (an upstreams
file), and 64 clients chatting in six ways (SSE with disconnects and reattaches, JSON with and without
Idempotency-Key, the OpenAI-compatible endpoint streamed and not, background Responses resumed after their last
event). At random moments: a gateway killed and restarted, a gateway paused past its lease and resumed, a
persistence process killed and restarted, the primary restarted, the primary killed and its replica promoted, an
upstream down for 10 to 30 s. Exits non-zero when a target of docs/reliability.md is missed.

    python -m chaos [--seconds 300] [--clients 64] [--seed N] [--upstream sampled|same] [--answer-log redis|none]
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from chaos import services
from chaos.answers import key_of
from chaos.checks import Stored, missed_targets, percentile, report, tally_chats, through_outages
from chaos.clients import KINDS, Chat, Client
from chaos.cluster import Pair
from chaos.joins import Request
from chaos.probes import AckProbe, watch_resumed
from testing.ports import free_port

FAULTS = (
    "gateway_kill",
    "gateway_pause",
    "persistence_kill",
    "postgres_restart",
    "postgres_failover",
    "upstream_outage",
)
DRAIN_SECONDS = 60
REDIS_URL = os.environ.get("CHAOS_REDIS_URL", "redis://127.0.0.1:6379/14")


@dataclass
class Orphans:
    """When a gateway died or froze, which answers it held, and when each was taken up again."""

    pickups: list[float] = field(default_factory=list)
    by_fault: dict[str, list[float]] = field(default_factory=dict)  # the same, by the fault that orphaned them
    never: int = 0


@dataclass
class Failovers:
    """After each promotion, how long each answer then unfinished took to move on, and how many never did."""

    resumed: list[float] = field(default_factory=list)
    never: list[int] = field(default_factory=list)


def fresh_answer_log(url: str) -> None:
    """Empties the answer log's Redis database, so a run reads no text a run before it left; raises when it is
    unreachable."""
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.flushdb()
    finally:
        client.close()


class Chaos:
    def __init__(self, directory: Path, seed: int, answers: str, answer_log: str | None) -> None:
        self.chance = random.Random(seed)
        self.sampled = answers == "sampled"
        self.cluster = Pair(directory / "postgres", (free_port(), free_port()))
        self.acks = AckProbe(self.cluster.conninfo)
        self.persistence = [services.persistence(f"persistence-{i}", directory, self.cluster.url) for i in (1, 2)]
        self.upstreams = [
            services.upstream("upstream-exact", directory, "exact", answers, seed),
            services.upstream("upstream-restart", directory, "restart", answers, seed + 1),
        ]
        both = list(zip(self.upstreams, ("exact", "restart"), strict=True))
        self.gateways = [
            services.gateway(
                name, directory, store.url, services.upstreams_file(directory / f"{name}.toml", both, mode), answer_log
            )
            for name, store, mode in zip(
                ("gateway-a", "gateway-b"), self.persistence, ("exact", "restart"), strict=True
            )
        ]
        self.faults: Counter[str] = Counter()
        self.untried = set(FAULTS)
        self.chatted = 0.0
        self.fault_seconds: dict[str, list[float]] = {}  # how long each took, restarts and rebuilds included
        self.orphans = Orphans()
        self.failovers = Failovers()
        self.outages: list[tuple[float, float]] = []  # each upstream outage's start and end (time.time())
        self.down: list[tuple[str, float]] = []  # which upstream each outage took down, and for how long
        self.lock = asyncio.Lock()  # one fault at a time

    def start(self) -> None:
        self.cluster.start()
        self.acks.start()
        for service in (*self.persistence, *self.upstreams, *self.gateways):
            service.start()

    def stop(self) -> None:
        for service in (*self.gateways, *self.persistence, *self.upstreams):
            service.stop()
        self.acks.stop()
        self.cluster.destroy()

    # The database, read directly (the check needs no service to be up)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.cluster.conninfo, connect_timeout=3) as connection:
            return connection.execute(sql, params).fetchall()

    def _watch_orphans(self, owner: str, died: float, fault: str) -> None:
        """How long each answer ``owner`` held when it died takes to be claimed again (its version moves)."""
        try:
            held = dict(
                self.query("SELECT id, version FROM messages WHERE status = 'in_progress' AND lease_owner = %s", owner)
            )
        except psycopg.Error:
            return
        while held and time.monotonic() - died < 30:
            time.sleep(0.05)
            try:
                rows = self.query("SELECT id, version, status FROM messages WHERE id = ANY(%s)", list(held))
            except psycopg.Error:
                continue
            for message_id, version, status in rows:
                if version != held[message_id] or status != "in_progress":
                    self.orphans.pickups.append(time.monotonic() - died)
                    self.orphans.by_fault.setdefault(fault, []).append(time.monotonic() - died)
                    del held[message_id]
        self.orphans.never += len(held)

    # Faults

    async def inject(self, until: float, gap: float) -> None:
        """Faults one at a time, each kind in turn in a shuffled order, ``gap`` seconds apart on average."""
        kinds = list(FAULTS)
        while time.monotonic() < until - 5 or self.untried:
            await asyncio.sleep(self.chance.uniform(0.6 * gap, 1.4 * gap))
            if not kinds:
                kinds = list(FAULTS)
            kind = kinds.pop(self.chance.randrange(len(kinds)))
            began = time.monotonic()
            await asyncio.to_thread(getattr(self, kind))
            self.faults[kind] += 1
            self.untried.discard(kind)
            self.fault_seconds.setdefault(kind, []).append(round(time.monotonic() - began, 1))

    def gateway_kill(self) -> None:
        gateway = self.chance.choice(self.gateways)
        gateway.kill()
        watcher = threading.Thread(target=self._watch_orphans, args=(gateway.name, time.monotonic(), "gateway_kill"))
        watcher.start()
        time.sleep(self.chance.uniform(0.2, 2))
        gateway.start()
        watcher.join()

    def gateway_pause(self) -> None:
        gateway = self.chance.choice(self.gateways)
        gateway.signal(signal.SIGSTOP)
        watcher = threading.Thread(target=self._watch_orphans, args=(gateway.name, time.monotonic(), "gateway_pause"))
        watcher.start()
        time.sleep(services.LEASE_SECONDS + self.chance.uniform(1, 3))
        gateway.signal(signal.SIGCONT)
        watcher.join()

    def persistence_kill(self) -> None:
        store = self.chance.choice(self.persistence)
        store.kill()
        time.sleep(self.chance.uniform(0.2, 1.5))
        store.start()

    def upstream_outage(self) -> None:
        """One upstream down for 10 to 30 s: 503 to every request, its streams cut (testing/upstream.py)."""
        upstream = self.chance.choice(self.upstreams)
        seconds = self.chance.uniform(10, 30)
        began = time.time()
        httpx.post(f"{upstream.url}/control/outage", params={"seconds": seconds}, timeout=10).raise_for_status()
        time.sleep(seconds)
        self.outages.append((began, began + seconds))
        self.down.append((upstream.name, round(seconds, 1)))

    def postgres_restart(self) -> None:
        self.cluster.restart_primary(self.chance.uniform(0.5, 2))

    def postgres_failover(self) -> None:
        """The primary killed outright; its replica promoted once that is noticed; a new replica built from it."""
        self.cluster.kill_primary()
        time.sleep(self.chance.uniform(0.5, 1.5))
        self.cluster.promote_replica()
        watcher = threading.Thread(
            target=watch_resumed,
            args=(self.query, time.monotonic(), self.failovers.resumed, self.failovers.never),
        )
        watcher.start()
        self.cluster.rebuild_replica()
        watcher.join()

    # Chats

    def chatting(self, until: float) -> bool:
        """Chats go on until the time is up and every kind of fault has come at least once (a busy machine, on
        which restarts take long, makes a short run longer rather than leave a fault out)."""
        return time.monotonic() < until or bool(self.untried)

    async def chat_until(self, number: int, until: float, chats: list[Chat]) -> None:
        chance = random.Random(self.chance.random())
        client = Client([g.url for g in self.gateways], chance, until + DRAIN_SECONDS / 2)
        try:
            count = 0
            while self.chatting(until):
                client.deadline = max(client.deadline, time.monotonic() + DRAIN_SECONDS / 2)
                chat = Chat(f"chat-{number}-{count}: tell me something", chance.choice(KINDS))
                chats.append(chat)
                await client.chat(chat)
                count += 1
        finally:
            await client.close()

    def wait_for_answers(self) -> None:
        """Until no answer is pending or in progress, or DRAIN_SECONDS pass (what is left is stuck)."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline:
            try:
                left = self.query("SELECT count(*) FROM messages WHERE status IN ('pending', 'in_progress')")[0][0]
            except psycopg.Error:
                left = -1
            if left == 0:
                return
            time.sleep(0.5)

    def upstream_requests(self) -> dict[str, list[Request]]:
        """Every request each chat's upstreams saw (both: an answer may be continued through either gateway)."""
        merged: dict[str, list[Request]] = {}
        for upstream in self.upstreams:
            for key, records in httpx.get(f"{upstream.url}/stats", timeout=60).json().items():
                merged.setdefault(key, []).extend(Request.of(record) for record in records)
        return merged

    def check(self, chats: list[Chat]) -> dict[str, Any]:
        """Every chat against what is stored and what the upstreams sent: the figures of the report."""
        rows = self.query(
            "SELECT q.content, a.status, a.content FROM messages q "
            "JOIN messages a ON a.session_id = q.session_id AND a.role = 'assistant' WHERE q.role = 'user'"
        )
        stored = {key_of(question): Stored(status, content) for question, status, content in rows}
        requests = self.upstream_requests()
        tally = tally_chats(chats, stored, requests, sampled=self.sampled)
        self.acks.stop()
        figures = report(chats, tally, self.orphans.pickups, self.orphans.never)
        figures |= through_outages(chats, stored, requests, self.outages)
        resumed = self.failovers.resumed
        return {
            **figures,
            "acknowledged writes lost": tally.acknowledged_lost + self.acks.lost(self.query),
            "writes acknowledged by the probe": len(self.acks.acknowledged),
            "answers resumed after a failover": len(resumed),
            "answers not resumed after a failover": sum(self.failovers.never),
            "failover resume p50 s": round(statistics.median(resumed), 2) if resumed else None,
            "failover resume p95 s": percentile(resumed, 0.95),
            "pickup p50 / p95 s by fault": {
                fault: [round(statistics.median(times), 2), percentile(times, 0.95)]
                for fault, times in self.orphans.by_fault.items()
            },
            "seconds of chats": round(self.chatted),
            "faults": dict(self.faults),
            "fault seconds": self.fault_seconds,
            "upstreams down (s)": self.down,
            "upstream": "sampled" if self.sampled else "same",
        }


async def _run(chaos: Chaos, seconds: float, clients: int, gap: float) -> list[Chat]:
    began = time.monotonic()
    until = began + seconds
    chats: list[Chat] = []
    faults = asyncio.create_task(chaos.inject(until, gap))
    await asyncio.gather(*(chaos.chat_until(number, until, chats) for number in range(clients)))
    await faults
    chaos.chatted = time.monotonic() - began
    return chats


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(2), "big"))
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--fault-gap", type=float, default=5, help="seconds between faults on average (default 5: 3 to 7)"
    )
    parser.add_argument(
        "--no-timing-targets", action="store_true", help="report the pickup and resume times, do not judge them"
    )
    parser.add_argument(
        "--upstream", choices=("sampled", "same"), default="sampled", help="new words on every request, or the same"
    )
    parser.add_argument(
        "--answer-log",
        choices=("redis", "none"),
        default="redis",
        help=f"the gateways' ANSWER_LOG_URL: CHAOS_REDIS_URL ({REDIS_URL}, emptied first), or none (persistence)",
    )
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    answer_log = REDIS_URL if args.answer_log == "redis" else None
    if answer_log is not None:
        try:
            fresh_answer_log(answer_log)
        except redis.RedisError as exc:
            sys.exit(f"chaos: the answer log's Redis is unreachable at {answer_log} ({exc}); CHAOS_REDIS_URL names it")
    directory = Path(tempfile.mkdtemp(prefix="chaos-"))
    directory.chmod(0o755)  # the cluster's own user (postgres, when run as root) must reach its directory
    chaos = Chaos(directory, args.seed, args.upstream, answer_log)
    print(f"chaos: seed {args.seed}, {args.seconds:.0f} s, {args.clients} clients, logs in {directory}", flush=True)
    try:
        chaos.start()
        chats = asyncio.run(_run(chaos, args.seconds, args.clients, args.fault_gap))
        chaos.wait_for_answers()
        figures = chaos.check(chats)
    finally:
        chaos.stop()
    figures |= {"seed": args.seed, "answer log": args.answer_log}
    for name, value in figures.items():
        if name not in ("problems", "evidence"):
            print(f"{name:>58}: {value}")
    for problem in figures["problems"]:
        print(f"  problem: {problem}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if missed := missed_targets(figures, timing=not args.no_timing_targets, fault_gap=args.fault_gap):
        print(f"chaos: targets missed: {', '.join(missed)} (logs kept in {directory})", file=sys.stderr)
        sys.exit(1)
    shutil.rmtree(directory, ignore_errors=True)
    print("chaos: every target met")


if __name__ == "__main__":
    main()
