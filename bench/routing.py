"""What routing costs the first chunk (issue 39): the gateway with an UPSTREAMS_FILE (the bench's upstream
serving the model, a fallback chain to a second one) against the same gateway on the single-upstream settings
(OPENAI_BASE_URL, as before upstreams files), in one sitting.

Each side is a gateway process of its own on the same persistence and the same fake upstream; their rounds
alternate, the side that goes first turning each round, so that the machine's drift lands on both alike. Each
round measures, at concurrency 1, the time to first chunk straight from the upstream and through the gateway
(bench/gateway.py's ``direct_and_through``) and the gateway's CPU per chunk. The answers never fall back: the
chain is there to be walked past, which is what every routed chat pays for.

    python -m bench.routing [--rounds 6] [--streams 50] [--quick]
"""

import argparse
import os
import signal
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench.clients import warm_up
from bench.common import save_results, scratch_directory
from bench.gateway import Measured, Relay, direct_and_through, pooled
from bench.processes import gateway, persistence_service, upstream
from testing.databases import DEFAULT_TEST_DATABASE_URL, temporary_database

ROUTED = """
[[upstreams]]
name = "bench"
base_url = "{first}/v1"
api_key = "sk-bench"
models = ["bench"]
continuation = "exact"

[[upstreams]]
name = "fallback"
base_url = "{second}/v1"
api_key = "sk-bench"
models = ["bench-fallback"]
continuation = "exact"

[fallbacks]
bench = ["bench-fallback"]
"""


@dataclass
class Routing:
    rounds: int
    streams: int  # per side
    single: Relay  # OPENAI_BASE_URL: one upstream named default
    routed: Relay  # UPSTREAMS_FILE: the same upstream, a fallback behind it
    routing_added_first_chunk_ms: float  # routed minus single, each net of the upstream's own time
    routing_cpu_us_per_chunk: float


def main(argv: list[str] | None = None) -> Routing:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few streams each: checks the harness only")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--streams", type=int, default=50, help="per side and round")
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))
    args = parser.parse_args(argv)
    rounds, count = (2, 3) if args.quick else (args.rounds, args.streams)
    with (
        temporary_database(sa.make_url(args.database_url), prefix="bench") as url,
        scratch_directory() as tmp,
        upstream() as first,
        upstream() as second,
        ExitStack() as stack,
    ):
        persistence = persistence_service(tmp, url)
        stack.callback(persistence.kill, signal.SIGTERM)
        path = Path(tmp) / "upstreams.toml"
        path.write_text(ROUTED.format(first=first, second=second))
        sides = {
            "single": stack.enter_context(gateway(tmp, persistence.url, first)),
            "routed": stack.enter_context(gateway(tmp, persistence.url, first, UPSTREAMS_FILE=str(path))),
        }
        listed = {model["id"] for model in httpx.get(f"{sides['routed'].url}/v1/models", timeout=10).json()["data"]}
        assert listed == {"bench", "bench-fallback"}, f"the routed gateway is not on the upstreams file: {listed}"
        runs: dict[str, list[Measured]] = {side: [] for side in sides}
        for service in sides.values():
            warm_up(service.url)
        for round_ in range(rounds):
            print(f"routing: round {round_ + 1} of {rounds} ...", flush=True)
            for side, service in list(sides.items())[:: 1 if round_ % 2 == 0 else -1]:
                runs[side].append(direct_and_through(first, service.url, service.pid, 1, count))
    single, routed = pooled(runs["single"]), pooled(runs["routed"])
    result = Routing(
        rounds,
        count * rounds,
        single,
        routed,
        round(routed.added_first_chunk_p50_ms - single.added_first_chunk_p50_ms, 3),
        round(routed.gateway_cpu_us_per_chunk - single.gateway_cpu_us_per_chunk, 2),
    )
    _print(result)
    save_results("routing", args.quick, asdict(result))
    return result


def _print(result: Routing) -> None:
    print(f"\nRouting's cost, concurrency 1, {result.streams} streams a side in {result.rounds} alternating rounds")
    print(f"{'':<34}{'direct ms':>10}{'gateway ms':>11}{'added ms':>10}{'CPU us/chunk':>14}")
    for name, relay in (("single upstream (OPENAI_BASE_URL)", result.single), ("UPSTREAMS_FILE", result.routed)):
        print(
            f"{name:<34}{relay.direct_first_chunk_p50_ms:>10.2f}{relay.gateway_first_chunk_p50_ms:>11.2f}"
            f"{relay.added_first_chunk_p50_ms:>10.2f}{relay.gateway_cpu_us_per_chunk:>14.1f}"
        )
    print(
        f"routing adds {result.routing_added_first_chunk_ms:+.2f} ms to the first chunk (p50), "
        f"{result.routing_cpu_us_per_chunk:+.1f} us CPU per chunk"
    )


if __name__ == "__main__":
    main()
