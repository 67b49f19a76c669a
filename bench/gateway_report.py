"""The gateway benchmark's report, as `make bench` prints it (bench/results/gateway.json holds all of it)."""

from typing import TYPE_CHECKING

from bench.processes import CHUNKS

if TYPE_CHECKING:  # bench.gateway prints with this module
    from bench.gateway import Report


def print_report(report: "Report") -> None:
    print("\n3. relay cost (p50; 'added' = through the gateway minus direct)")
    print(
        f"{'conc':>4} {'streams':>7} {'TTFC direct':>11} {'TTFC gateway':>12} {'added':>7} {'total direct':>12}"
        f" {'total gateway':>13} {'CPU/chunk':>9}"
    )
    for r in report.relay:
        print(
            f"{r.concurrency:4} {r.streams:7} {r.direct_first_chunk_p50_ms:9.2f}ms"
            f" {r.gateway_first_chunk_p50_ms:10.2f}ms {r.added_first_chunk_p50_ms:5.2f}ms"
            f" {r.direct_total_p50_ms:10.1f}ms {r.gateway_total_p50_ms:11.1f}ms"
            f" {r.gateway_cpu_us_per_chunk:7.1f}us"
        )
    if alt := report.alternative:
        print(
            f"  {alt.name}, c = 1, {alt.streams} streams in {alt.rounds} rounds alternating with the gateway's:"
            f" TTFC {alt.first_chunk_p50_ms:.2f}ms"
            f" ({alt.direct_first_chunk_p50_ms:.2f}ms direct), added {alt.added_first_chunk_p50_ms:.2f}ms,"
            f" CPU/chunk {alt.cpu_us_per_chunk:.1f}us; the gateway's added TTFC is"
            f" {alt.gateway_added_first_chunk_ratio:.2f} of it, its CPU/chunk {alt.gateway_cpu_per_chunk_ratio:.3f}"
        )
    if tc := report.tool_calls:
        print(
            f"\n3b. tool calls, c = 1, {tc.streams} answers of one {CHUNKS}-fragment call: CPU/chunk"
            f" {tc.cpu_us_per_chunk:.1f}us against {tc.text_cpu_us_per_chunk:.1f}us for text in the same run"
            f" ({tc.ratio:.2f})"
        )
    if rr := report.responses:
        print(
            f"\n3c. Responses API, c = 1, {rr.streams} streams alternating with Chat Completions: added TTFC"
            f" {rr.responses_added_first_chunk_ms:.2f}ms against {rr.chat_added_first_chunk_ms:.2f}ms"
            f" ({rr.added_ratio:.2f}), CPU/chunk {rr.responses_cpu_us_per_chunk:.1f}us against"
            f" {rr.chat_cpu_us_per_chunk:.1f}us ({rr.cpu_ratio:.2f})"
        )
    if direct := report.reader_delay.get("direct"):
        print(
            f"\n3d. reader delay per token (upstream sent it -> client holds it), {direct.streams} streams of"
            f" {CHUNKS} tokens at {direct.tokens_per_second:.0f}/s, {direct.concurrency} at once"
        )
        for side, d in report.reader_delay.items():
            print(f"  {side:8} p50 {d.p50_ms:6.2f}ms  p99 {d.p99_ms:6.2f}ms  max {d.max_ms:6.2f}ms")
    print(f"\n4. write amplification (answer log: {report.answer_log or 'none'})")
    for a in report.amplification:
        print(
            f"  {a.configuration}, {a.upstream}, {a.answers} answers, {a.tokens} tokens:"
            f" {a.writes_per_1000_tokens:.1f} writes per 1,000 tokens"
            f" {a.requests}; body bytes / answer bytes {a.body_bytes_per_answer_byte:.2f}"
            f" (with HTTP heads {a.wire_bytes_per_answer_byte:.2f})"
        )
    if r5 := report.resume:
        print(
            f"\n5. resume: {r5.resumed_tokens} tokens resumed vs {r5.answers * CHUNKS} to regenerate:"
            f" {r5.resume_cost_vs_regenerating:.2f} (answers complete and whole: {r5.complete_and_whole})"
        )
    if m := report.memory:
        print(
            f"\n6. memory: {m.streams} open streams: RSS {m.rss_peak_mib:.0f} MiB at peak,"
            f" {m.rss_idle_mib:.0f} MiB idle ({m.most_open_at_once} relaying at once at most)"
        )
