"""The gateway's cost (benchmarks 3 to 6 of docs/benchmarks.md), against a fast fake upstream.

3. Relay cost: time to first chunk and total stream time at concurrency 1, 16 and 64, straight from the
   upstream vs through the gateway (persistence on PostgreSQL), and the gateway's CPU per relayed chunk
   (from its own /proc accounting). With ``--litellm``, the same at concurrency 1 through LiteLLM's proxy,
   the alternative, in the same run, and the gateway's figures as fractions of LiteLLM's.
3d. Reader delay: per token, from the upstream sending it to the client holding it, with a 50 tokens/s upstream
   and several streams at once (bench/reader_delay.py).
4. Write amplification: persistence requests per 1,000 streamed tokens and bytes sent to persistence per
   byte of answer, counted by a proxy between the gateway and persistence, unpaced and at 50 tokens/s; with
   ``--answer-log``, both with the log and without it (issue 37: without, each chunk is saved before it is shown).
5. Resume savings: answers break off at 80% and the gateway resumes them; tokens the upstream sent for
   the resumes vs for a whole answer.
6. Memory: the gateway's resident memory with 200 streams open at once.

Every service runs in its own process, as users run them; the clients and the proxy run here.

With ``--answer-log`` the gateways run with the answer log (ANSWER_LOG_URL), as compose runs them: in the Redis at
BENCH_REDIS_URL (default redis://127.0.0.1:6379/13), at another URL given, or with ``--answer-log compose`` in a
redis-server of the run's own configured as compose's (an fsync per append).

    python -m bench.gateway [--quick] [--litellm .venv-litellm/bin/litellm] [--answer-log [URL|compose]]
"""

import argparse
import asyncio
import itertools
import os
import signal
import statistics
from dataclasses import asdict, dataclass, field

import httpx
import sqlalchemy as sa

from bench.amplification import Amplification, amplification
from bench.clients import ANSWER, Stream, p50_ms, streams, warm_up
from bench.common import KEY, redis_durability, save_results, scratch_directory
from bench.gateway_report import print_report
from bench.processes import (
    CHUNKS,
    LITELLM_KEY,
    answer_log_at,
    cpu_seconds,
    gateway,
    litellm,
    persistence_service,
    rss_mib,
    upstream,
)
from bench.reader_delay import ReaderDelay, reader_delays
from testing.databases import DEFAULT_TEST_DATABASE_URL, temporary_database
from testing.processes import Service


@dataclass
class Relay:
    concurrency: int
    streams: int
    direct_first_chunk_p50_ms: float
    gateway_first_chunk_p50_ms: float
    added_first_chunk_p50_ms: float
    direct_total_p50_ms: float
    gateway_total_p50_ms: float
    gateway_cpu_us_per_chunk: float


def relay(upstream_url: str, gateway_service: Service, levels: list[tuple[int, int]]) -> list[Relay]:
    warm_up(gateway_service.url)
    return [
        _relay(
            concurrency,
            *direct_and_through(upstream_url, gateway_service.url, gateway_service.pid, concurrency, count),
        )
        for concurrency, count in levels
    ]


def _relay(concurrency: int, direct: list[Stream], through: list[Stream], cpu_us_per_chunk: float) -> Relay:
    first_direct, first_gateway = p50_ms([s.first_chunk for s in direct]), p50_ms([s.first_chunk for s in through])
    return Relay(
        concurrency,
        len(through),
        first_direct,
        first_gateway,
        first_gateway - first_direct,
        p50_ms([s.total for s in direct]),
        p50_ms([s.total for s in through]),
        cpu_us_per_chunk,
    )


Measured = tuple[list[Stream], list[Stream], float]  # direct streams, relayed streams, CPU µs per chunk


def pooled(runs: list[Measured]) -> Relay:
    """One concurrency-1 row from several rounds: all their streams, and their mean CPU per chunk."""
    direct = [s for run in runs for s in run[0]]
    through = [s for run in runs for s in run[1]]
    return _relay(1, direct, through, statistics.fmean(run[2] for run in runs))


def direct_and_through(
    upstream_url: str,
    url: str,
    pid: int,
    concurrency: int,
    count: int,
    headers: dict[str, str] | None = None,
    responses: bool = False,
) -> Measured:
    """The streams straight from the upstream, then through the relay at ``url`` (its Responses API with
    ``responses``), and the relay's (process ``pid``) CPU microseconds per chunk."""
    direct = asyncio.run(streams(upstream_url, concurrency, count))
    before = cpu_seconds(pid)
    through = asyncio.run(streams(url, concurrency, count, headers, responses))
    return direct, through, (cpu_seconds(pid) - before) / (count * CHUNKS) * 1e6


@dataclass
class Alternative:
    """Benchmark 3 at concurrency 1 through LiteLLM's proxy, in rounds alternating with the gateway's."""

    name: str
    streams: int
    rounds: int  # alternating with the gateway's
    direct_first_chunk_p50_ms: float
    first_chunk_p50_ms: float
    added_first_chunk_p50_ms: float
    cpu_us_per_chunk: float
    # The gateway's figures at concurrency 1 as fractions of the alternative's.
    gateway_added_first_chunk_ratio: float
    gateway_cpu_per_chunk_ratio: float


def compared(
    tmp: str, command: str, upstream_url: str, gateway_service: Service, rounds: int, count: int, alternative_count: int
) -> tuple[Relay, Alternative]:
    """Concurrency 1 through the gateway and through LiteLLM's proxy in alternating rounds (``count`` and
    ``alternative_count`` streams each, the one that goes first alternating too), each after its own direct
    streams: the machine's speed drifts within minutes, and this way the drift lands on both alike."""
    with litellm(tmp, command, upstream_url) as (url, pid):
        headers = {"Authorization": f"Bearer {LITELLM_KEY}"}
        warm_up(gateway_service.url)
        warm_up(url, headers)
        gateway_runs: list[Measured] = []
        alternative_runs: list[Measured] = []
        sides = [
            (gateway_runs, gateway_service.url, gateway_service.pid, count, None),
            (alternative_runs, url, pid, alternative_count, headers),
        ]
        for round_ in range(rounds):
            for runs, relay_url, relay_pid, streams_, relay_headers in sides if round_ % 2 == 0 else sides[::-1]:
                runs.append(direct_and_through(upstream_url, relay_url, relay_pid, 1, streams_, relay_headers))
    gateway_at_1, other = pooled(gateway_runs), pooled(alternative_runs)
    alternative = Alternative(
        "LiteLLM proxy",
        other.streams,
        rounds,
        other.direct_first_chunk_p50_ms,
        other.gateway_first_chunk_p50_ms,
        other.added_first_chunk_p50_ms,
        other.gateway_cpu_us_per_chunk,
        gateway_at_1.added_first_chunk_p50_ms / other.added_first_chunk_p50_ms,
        gateway_at_1.gateway_cpu_us_per_chunk / other.gateway_cpu_us_per_chunk,
    )
    return gateway_at_1, alternative


@dataclass
class Resume:
    answers: int
    fresh_tokens: int
    resumed_tokens: int
    resume_cost_vs_regenerating: float
    complete_and_whole: bool


def resume(gateway_service: Service, upstream_url: str, persistence: Service, answers: int) -> Resume:
    httpx.post(f"{upstream_url}/stats/reset")
    done = asyncio.run(streams(gateway_service.url, 1, answers))
    stats = httpx.get(f"{upstream_url}/stats").json()
    with httpx.Client(base_url=persistence.url, headers={"x-api-key": KEY}) as store:
        stored = store.get("/sessions", params={"limit": answers}).json()["items"]
        last = [store.get(f"/sessions/{s['id']}/messages/last", params={"role": "assistant"}).json() for s in stored]
    whole = all(s.text == ANSWER for s in done) and all(
        m["status"] == "complete" and m["content"] == ANSWER for m in last
    )
    return Resume(
        answers,
        stats["fresh_tokens"],
        stats["resumed_tokens"],
        stats["resumed_tokens"] / (answers * CHUNKS),
        whole,
    )


@dataclass
class Memory:
    streams: int
    rss_idle_mib: float
    rss_peak_mib: float
    most_open_at_once: int


def memory(gateway_service: Service, count: int) -> Memory:
    assert gateway_service.process is not None
    pid = gateway_service.process.pid
    idle = rss_mib(pid)

    async def run() -> tuple[float, list[Stream]]:
        peak = idle
        task = asyncio.ensure_future(streams(gateway_service.url, count, count))
        while not task.done():
            peak = max(peak, rss_mib(pid))
            await asyncio.sleep(0.1)
        return peak, await task

    peak, done = asyncio.run(run())
    # Streams relaying at once: the most [first chunk, end] intervals that overlap.
    edges = sorted([(s.started + s.first_chunk, 1) for s in done] + [(s.started + s.total, -1) for s in done])
    most = max(itertools.accumulate(step for _, step in edges))
    return Memory(count, idle, peak, most)


@dataclass
class ToolCallRelay:
    """Section 3b: answers that are one tool call of CHUNKS fragments, at concurrency 1."""

    streams: int
    cpu_us_per_chunk: float
    text_cpu_us_per_chunk: float  # the same run's text answers, for the ratio
    ratio: float


def tool_call_relay(
    tmp: str, persistence: Service, count: int, rounds: int = 5, answer_log: str | None = None
) -> ToolCallRelay:
    """Section 3b: ``count`` answers of one call each and ``count`` of text, each through a gateway of its own,
    in alternating rounds (the one that goes first alternating too): the machine's drift lands on both."""
    with (
        upstream("--tool-calls") as calls,
        upstream() as text,
        gateway(tmp, persistence.url, calls, answer_log) as tool_gateway,
        gateway(tmp, persistence.url, text, answer_log) as text_gateway,
    ):
        cpu: dict[str, list[float]] = {"tool": [], "text": []}
        sides = [("tool", calls, tool_gateway), ("text", text, text_gateway)]
        for service in (tool_gateway, text_gateway):
            warm_up(service.url)
        for round_ in range(rounds):
            for side, upstream_url, service in sides if round_ % 2 == 0 else sides[::-1]:
                _, _, used = direct_and_through(upstream_url, service.url, service.pid, 1, count // rounds)
                cpu[side].append(used)
    tool_cpu, text_cpu = statistics.mean(cpu["tool"]), statistics.mean(cpu["text"])
    return ToolCallRelay(count // rounds * rounds, tool_cpu, text_cpu, tool_cpu / text_cpu)


@dataclass
class ResponsesRelay:
    """Section 3c: the same answers streamed through the Responses API and through Chat Completions, at
    concurrency 1, in alternating rounds."""

    streams: int
    chat_added_first_chunk_ms: float
    responses_added_first_chunk_ms: float
    added_ratio: float
    chat_cpu_us_per_chunk: float
    responses_cpu_us_per_chunk: float
    cpu_ratio: float


def responses_relay(upstream_url: str, service: Service, rounds: int, count: int) -> ResponsesRelay:
    warm_up(service.url)
    asyncio.run(streams(service.url, 2, 4, responses=True))
    chat, responses = [], []
    for _ in range(rounds):
        chat.append(direct_and_through(upstream_url, service.url, service.pid, 1, count))
        responses.append(direct_and_through(upstream_url, service.url, service.pid, 1, count, responses=True))
    as_chat, as_responses = pooled(chat), pooled(responses)
    return ResponsesRelay(
        as_responses.streams,
        as_chat.added_first_chunk_p50_ms,
        as_responses.added_first_chunk_p50_ms,
        as_responses.added_first_chunk_p50_ms / as_chat.added_first_chunk_p50_ms,
        as_chat.gateway_cpu_us_per_chunk,
        as_responses.gateway_cpu_us_per_chunk,
        as_responses.gateway_cpu_us_per_chunk / as_chat.gateway_cpu_us_per_chunk,
    )


@dataclass
class Report:
    answer_log: str | None = None  # its URL and how it keeps what it acknowledged; None: without one
    relay: list[Relay] = field(default_factory=list)
    tool_calls: ToolCallRelay | None = None
    responses: ResponsesRelay | None = None
    alternative: Alternative | None = None
    reader_delay: dict[str, ReaderDelay] = field(default_factory=dict)  # "direct" and "gateway"
    amplification: list[Amplification] = field(default_factory=list)
    resume: Resume | None = None
    memory: Memory | None = None


PACED = ("--delay", "0.02")  # 50 tokens/s, a typical hosted model
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few streams each: checks the harness only")
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))
    parser.add_argument("--litellm", metavar="COMMAND", help="LiteLLM's `litellm` command: compare the relay with it")
    parser.add_argument(
        "--answer-log", nargs="?", const=BENCH_REDIS_URL, metavar="URL|compose", help="run the gateways with it"
    )
    args = parser.parse_args(argv)
    report = Report()
    with (
        temporary_database(sa.make_url(args.database_url), prefix="bench") as url,
        scratch_directory() as tmp,
        answer_log_at(tmp, args.answer_log) as log,
    ):
        report.answer_log = None if log is None else f"{log} ({redis_durability(log)})"
        persistence = persistence_service(tmp, url)
        try:
            relay_sections(args, tmp, persistence, log, report)
            paced_sections(args.quick, tmp, persistence, log, report)
            with upstream("--drop-at", "0.8") as breaking, gateway(tmp, persistence.url, breaking, log) as service:
                print("5. resume savings ...", flush=True)
                report.resume = resume(service, breaking, persistence, 3 if args.quick else 20)
            with upstream("--delay", "0.1") as slow, gateway(tmp, persistence.url, slow, log) as service:
                print("6. memory ...", flush=True)
                report.memory = memory(service, 20 if args.quick else 200)
        finally:
            persistence.kill(signal.SIGTERM)
    print_report(report)
    save_results("gateway", args.quick, asdict(report))
    return report


def relay_sections(args: argparse.Namespace, tmp: str, persistence: Service, log: str | None, report: Report) -> None:
    """Sections 3, 3b and 3c."""
    quick = args.quick
    levels = [(1, 5), (16, 16), (64, 64)] if quick else [(1, 100), (16, 320), (64, 256)]
    with upstream() as fast, gateway(tmp, persistence.url, fast, log) as service:
        if args.litellm:
            print("3. relay cost, at concurrency 1 alternating with LiteLLM's proxy ...", flush=True)
            rounds = 2 if quick else 5
            at_1, report.alternative = compared(
                tmp, args.litellm, fast, service, rounds, levels[0][1] // rounds, 3 if quick else 6
            )
            print("3. relay cost, at concurrency 16 and 64 ...", flush=True)
            report.relay = [at_1, *relay(fast, service, levels[1:])]
        else:
            print("3. relay cost ...", flush=True)
            report.relay = relay(fast, service, levels)
        print("3c. relay cost through the Responses API ...", flush=True)
        report.responses = responses_relay(fast, service, 2 if quick else 5, 3 if quick else 20)
    print("3b. relay cost of tool-call chunks ...", flush=True)
    report.tool_calls = tool_call_relay(tmp, persistence, 5 if quick else 100, answer_log=log)


def paced_sections(quick: bool, tmp: str, persistence: Service, log: str | None, report: Report) -> None:
    """Section 3d, and section 4 unpaced and at 50 tokens/s, with the answer log and without it."""
    rounds, concurrency = (1, 2) if quick else (3, 8)
    with upstream(*PACED, "--stamp") as paced, gateway(tmp, persistence.url, paced, log) as service:
        print("3d. reader delay per chunk at 50 tokens/s ...", flush=True)
        warm_up(service.url)
        delays: dict[str, list[float]] = {"direct": [], "gateway": []}
        for round_ in range(rounds):  # alternating, the one that goes first alternating too
            for side, url in [("direct", paced), ("gateway", service.url)][:: 1 if round_ % 2 == 0 else -1]:
                delays[side] += reader_delays(paced, url, ANSWER, concurrency, concurrency)
        report.reader_delay = {
            side: ReaderDelay.of(values, rounds * concurrency, concurrency, 50) for side, values in delays.items()
        }
    answers = 4 if quick else 20
    with upstream() as fast, upstream(*PACED) as paced:
        for configuration in [log, None] if log else [None]:
            for upstream_url, is_paced in ((fast, False), (paced, True)):
                print(f"4. write amplification ({'50 tokens/s' if is_paced else 'unpaced'}) ...", flush=True)
                report.amplification.append(
                    amplification(tmp, persistence, upstream_url, answers, configuration, paced=is_paced)
                )


if __name__ == "__main__":
    main()
