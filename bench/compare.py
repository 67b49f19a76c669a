"""Issue 37's targets: this source tree beside another one (``--code DIR``), in one sitting.

Each side runs its own persistence (on a database of its own) and its own gateways, from its own tree, against
the same two fake upstreams: this tree's with the answer log (as compose runs it) and, for what showing only
durable text costs without one, this tree without the log; the other tree as it is (the code before issue 37
knows no answer log; ``--before-log`` runs it with the log too, to compare two trees that both have it). Their
rounds alternate, the side that goes first turning each round, so that the
machine's drift lands on all of them alike. Each round measures, per side:

- the added time to first chunk at concurrency 1 (through the gateway minus straight from the upstream),
  and the gateway's CPU per chunk;
- the delay a reader sees per token with a 50 tokens/s upstream, several streams at once (bench/reader_delay.py).

Then the writes to persistence per 1,000 tokens, unpaced and at 50 tokens/s (bench/amplification.py), and
the table, each figure against the issue's target.

    git worktree add /tmp/before b4ec1f3
    python -m bench.compare --code /tmp/before [--rounds 6] [--quick] [--answer-log URL|compose] [--before-log]
"""

import argparse
import os
import signal
import subprocess
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sqlalchemy as sa

from bench.amplification import amplification
from bench.clients import ANSWER, Stream, p50_ms, warm_up
from bench.common import redis_durability, save_results, scratch_directory
from bench.gateway import BENCH_REDIS_URL, PACED, direct_and_through
from bench.processes import answer_log_at, gateway, persistence_service, upstream
from bench.reader_delay import percentile, reader_delays
from testing.databases import DEFAULT_TEST_DATABASE_URL, temporary_database
from testing.processes import Service

HERE = str(Path(__file__).parents[1])


@dataclass
class Side:
    """One configuration under test and everything measured of it."""

    name: str
    code: str  # its source tree
    answer_log: str | None
    commit: str = ""
    first_chunk_direct: list[float] = field(default_factory=list)  # seconds, every stream of every round
    first_chunk_gateway: list[float] = field(default_factory=list)
    added_first_chunk_ms_by_round: list[float] = field(default_factory=list)
    cpu_us_per_chunk_by_round: list[float] = field(default_factory=list)
    reader_delays: list[float] = field(default_factory=list)  # seconds, every token of every round
    reader_p99_ms_by_round: list[float] = field(default_factory=list)
    writes_per_1000_tokens: dict[str, float] = field(default_factory=dict)  # "unpaced", "50 tokens/s"

    def added_first_chunk_ms(self) -> float:
        return p50_ms(self.first_chunk_gateway) - p50_ms(self.first_chunk_direct)

    def cpu_us_per_chunk(self) -> float:
        return sum(self.cpu_us_per_chunk_by_round) / len(self.cpu_us_per_chunk_by_round)

    def reader_ms(self, p: int) -> float:
        return percentile(self.reader_delays, p) * 1000


@dataclass
class Sizes:
    rounds: int
    first_chunk_streams: int  # per round, at concurrency 1
    reader_streams: int  # per round, all at once
    answers: int  # for the writes, each way


def commit_of(code: str) -> str:
    described = subprocess.run(["git", "-C", code, "describe", "--always", "--dirty"], capture_output=True, text=True)
    return described.stdout.strip() or "?"


def measure_round(
    side: Side, fast: str, paced: str, fast_gateway: Service, paced_gateway: Service, sizes: Sizes
) -> None:
    direct, through, cpu = direct_and_through(fast, fast_gateway.url, fast_gateway.pid, 1, sizes.first_chunk_streams)
    side.first_chunk_direct += [s.first_chunk for s in direct]
    side.first_chunk_gateway += [s.first_chunk for s in through]
    side.added_first_chunk_ms_by_round.append(_added_ms(direct, through))
    side.cpu_us_per_chunk_by_round.append(cpu)
    delays = reader_delays(paced, paced_gateway.url, ANSWER, sizes.reader_streams, sizes.reader_streams)
    side.reader_delays += delays
    side.reader_p99_ms_by_round.append(percentile(delays, 99) * 1000)


def _added_ms(direct: list[Stream], through: list[Stream]) -> float:
    return p50_ms([s.first_chunk for s in through]) - p50_ms([s.first_chunk for s in direct])


def run(sides: list[Side], database_url: str, sizes: Sizes, tmp: str) -> None:
    """Every side's services up at once, then the alternating rounds, then the writes (each side's in turn)."""
    with ExitStack() as stack:
        fast = stack.enter_context(upstream())
        paced = stack.enter_context(upstream(*PACED, "--stamp"))
        services = []
        for side in sides:
            url = stack.enter_context(temporary_database(sa.make_url(database_url), prefix="bench"))
            persistence = persistence_service(tmp, url, side.code)
            stack.callback(persistence.kill, signal.SIGTERM)
            fast_gateway = stack.enter_context(gateway(tmp, persistence.url, fast, side.answer_log, side.code))
            paced_gateway = stack.enter_context(gateway(tmp, persistence.url, paced, side.answer_log, side.code))
            warm_up(fast_gateway.url)
            warm_up(paced_gateway.url)
            services.append((side, persistence, fast_gateway, paced_gateway))
        for round_ in range(sizes.rounds):
            print(f"round {round_ + 1} of {sizes.rounds} ...", flush=True)
            turned = services[round_ % len(services) :] + services[: round_ % len(services)]
            for side, _, fast_gateway, paced_gateway in turned:
                measure_round(side, fast, paced, fast_gateway, paced_gateway, sizes)
        print("writes to persistence ...", flush=True)
        for side, persistence, _, _ in services:
            for upstream_url, pace in ((fast, "unpaced"), (paced, "50 tokens/s")):
                counted = amplification(
                    tmp, persistence, upstream_url, sizes.answers, side.answer_log, side.code, pace != "unpaced"
                )
                side.writes_per_1000_tokens[pace] = counted.writes_per_1000_tokens


# (figure, how it is read off a side, the target's bound against the code before, or an absolute one)
FIGURES: list[tuple[str, str, float | None, float | None]] = [
    ("added TTFC, c = 1, p50 (ms)", "ttfc", 1.0, None),
    ("reader delay at 50 tokens/s, p50 (ms)", "reader50", None, None),
    ("reader delay at 50 tokens/s, p99 (ms)", "reader99", 20.0, None),
    ("writes per 1,000 tokens, 50 tokens/s", "writes_paced", None, 30.0),
    ("writes per 1,000 tokens, unpaced", "writes_fast", None, 10.0),
    ("CPU per chunk, c = 1 (us)", "cpu", None, None),
]


def figure(side: Side, key: str) -> float:
    return {
        "ttfc": side.added_first_chunk_ms,
        "reader50": lambda: side.reader_ms(50),
        "reader99": lambda: side.reader_ms(99),
        "writes_paced": lambda: side.writes_per_1000_tokens["50 tokens/s"],
        "writes_fast": lambda: side.writes_per_1000_tokens["unpaced"],
        "cpu": side.cpu_us_per_chunk,
    }[key]()


def verdict(before: float, value: float, above: float | None, at_most: float | None) -> str:
    """Against the issue's target: at most ``above`` more than before, or at most ``at_most``."""
    if above is not None:
        return f"{value - before:+.2f}: {'met' if value - before <= above else 'MISSED'} (<= +{above:g})"
    if at_most is not None:
        return f"{'met' if value <= at_most else 'MISSED'} (<= {at_most:g})"
    return "reported"


BY_ROUND = [("added TTFC (ms)", "added_first_chunk_ms_by_round"), ("reader p99 (ms)", "reader_p99_ms_by_round")]


def table(before: Side, sides: list[Side]) -> list[str]:
    """The figures side by side, and each side's against the issue's targets (the difference from before)."""
    heads = [f"{s.name} ({s.commit})" for s in (before, *sides)]
    lines = [f"{'':38}" + "".join(f"{h:>22}" for h in heads) + "".join(f"   {s.name} vs target" for s in sides)]
    for name, key, above, at_most in FIGURES:
        values = [figure(s, key) for s in (before, *sides)]
        verdicts = [verdict(values[0], v, above, at_most) for v in values[1:]]
        lines.append(f"{name:38}" + "".join(f"{v:22.2f}" for v in values) + "".join(f"   {v}" for v in verdicts))
    lines.append("rounds (the spread the sitting had):")
    for label, of in BY_ROUND:
        for s in (before, *sides):
            lines.append(f"  {label}, {s.name}: " + " / ".join(f"{v:.1f}" for v in getattr(s, of)))
    return lines


def summary(side: Side) -> dict[str, object]:
    """What bench/results/compare.json keeps of a side: its figures and rounds, not every stream's times."""
    kept = {k: v for k, v in asdict(side).items() if k not in ("first_chunk_direct", "first_chunk_gateway")}
    kept.pop("reader_delays")
    return kept | {key: figure(side, key) for _, key, _, _ in FIGURES}


def main(argv: list[str] | None = None) -> list[Side]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", required=True, metavar="DIR", help="the other source tree (the code before)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="a few streams each: checks the harness only")
    parser.add_argument("--answer-log", default=BENCH_REDIS_URL, metavar="URL|compose")
    parser.add_argument(
        "--before-log", action="store_true", help="the other tree with the answer log too (one that knows it)"
    )
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))
    args = parser.parse_args(argv)
    sizes = Sizes(2, 3, 2, 4) if args.quick else Sizes(args.rounds, 20, 8, 20)
    with scratch_directory() as tmp, answer_log_at(tmp, args.answer_log) as log:
        assert log is not None
        before = Side("before", str(Path(args.code).resolve()), log if args.before_log else None)
        sides = [Side("answer log", HERE, log), Side("no log", HERE, None)]
        for side in (before, *sides):
            side.commit = commit_of(side.code)
        print(f"before: {before.code} ({before.commit}); answer log: {log} ({redis_durability(log)})", flush=True)
        run([before, *sides], args.database_url, sizes, tmp)
    print("\n" + "\n".join(table(before, sides)))
    save_results("compare", args.quick, {"sizes": asdict(sizes), "sides": [summary(s) for s in (before, *sides)]})
    return [before, *sides]


if __name__ == "__main__":
    main()
