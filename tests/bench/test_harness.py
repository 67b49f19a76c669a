"""`make bench-quick` in miniature: every benchmark runs a few seconds and reports what it measured.

The numbers are not checked (the machine is shared and noisy): only that each harness still works end to
end, so `make bench` does not rot between the times someone runs it.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import RESULTS
from tests.conftest import postgres_url_or_skip, reachable_redis

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # starts processes: left out of `make test-fast`

ROOT = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def _tools() -> None:
    postgres_url_or_skip()
    for tool in ("wrk", "pgbench"):
        if shutil.which(tool) is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{tool} is missing: `make bench-deps` installs it")
            pytest.skip(f"{tool} is missing (make bench-deps)")


def run_quick(name: str, *args: str) -> object:
    result = RESULTS / f"{name}-quick.json"
    result.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", f"bench.{name}", "--quick", *args], cwd=ROOT, check=True, timeout=600)
    return json.loads(result.read_text())


def test_persistence_throughput() -> None:
    results = run_quick("persistence_throughput")
    assert isinstance(results, list)
    assert [r["name"] for r in results] == ["create message", "append text", "read 50 messages", "list sessions"]
    assert all(r["api_rps"] > 0 and r["raw_tps"] > 0 and r["ratio"] > 0 for r in results)


def test_scale() -> None:
    results = run_quick("scale")
    assert isinstance(results, list)
    assert [r["operation"] for r in results] == ["read newest page", "append text"]
    assert all(r["big_p50_ms"] > 0 and r["small_p50_ms"] > 0 for r in results)


def test_gateway() -> None:
    report = run_quick("gateway")
    assert isinstance(report, dict)
    assert [r["concurrency"] for r in report["relay"]] == [1, 16, 64]
    assert all(r["gateway_cpu_us_per_chunk"] > 0 for r in report["relay"])
    assert [(a["configuration"], a["upstream"]) for a in report["amplification"]] == [
        ("no log", "unpaced"),
        ("no log", "50 tokens/s"),
    ]
    assert all(a["writes_per_1000_tokens"] > 0 for a in report["amplification"])
    # Every token of every stream has its delay, straight from the upstream and through the gateway.
    delays = report["reader_delay"]
    assert sorted(delays) == ["direct", "gateway"]
    assert all(d["tokens"] == d["streams"] * 200 and 0 < d["p50_ms"] <= d["p99_ms"] for d in delays.values())
    # Resumed answers must come out whole: the savings only count if nothing was lost.
    assert report["resume"]["complete_and_whole"] is True
    assert 0 < report["resume"]["resume_cost_vs_regenerating"] < 1
    assert report["memory"]["most_open_at_once"] == report["memory"]["streams"]


def test_compare() -> None:
    """Issue 37's comparison, with this tree as the other one too: the harness runs a tree given by path."""
    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    reachable_redis(url, "BENCH_REDIS_URL")  # the answer log's
    # The other tree with the log too (--before-log): "no log" runs a side without one already.
    report = run_quick("compare", "--code", str(ROOT), "--answer-log", url, "--before-log")
    assert isinstance(report, dict)
    sides = report["sides"]
    assert [s["name"] for s in sides] == ["before", "answer log", "no log"]
    assert sides[0]["code"] == str(ROOT)
    for side in sides:
        assert len(side["added_first_chunk_ms_by_round"]) == len(side["reader_p99_ms_by_round"]) == 2
        assert 0 < side["reader50"] <= side["reader99"]
    # The answer log is what keeps the writes batched: without it, text is saved chunk by chunk when paced.
    assert max(sides[0]["writes_paced"], sides[1]["writes_paced"]) <= 40 < sides[2]["writes_paced"]


def test_routing() -> None:
    """Issue 39: the gateway on an upstreams file beside the single-upstream settings, in alternating rounds."""
    report = run_quick("routing")
    assert isinstance(report, dict)
    assert (report["rounds"], report["streams"]) == (2, 6)
    for side in ("single", "routed"):
        assert report[side]["streams"] == 6
        assert report[side]["gateway_first_chunk_p50_ms"] > report[side]["direct_first_chunk_p50_ms"] > 0
        assert report[side]["gateway_cpu_us_per_chunk"] > 0
