"""A fast OpenAI-compatible upstream for the gateway benchmarks, run in its own process: the fake of
testing/upstream.py, configured.

Every answer is the same ``--chunks`` tokens ("w0 w1 w2 ..."), one per SSE chunk, ``--delay`` seconds
apart. A request whose last message is a partial answer (the gateway resuming) gets only the rest.
With ``--drop-at F``, a fresh (not resumed) answer breaks off after that fraction of its tokens. With
``--tool-calls``, every answer is one tool call instead, its arguments those tokens, one fragment per chunk.
GET /stats tells how many completion tokens were sent, fresh and resumed; POST /stats/reset zeroes them.
With ``--stamp``, GET /stamps gives each fresh answer's send times (``time.monotonic()``, one per token), keyed
by its question (the last user message): the reader delay of bench/reader_delay.py. Reset clears them too.

    python -m bench.upstream PORT [--chunks 200] [--delay 0] [--drop-at 0.8] [--stamp]
"""

import argparse
from dataclasses import replace

import uvicorn
from fastapi import FastAPI

from testing.chunks import Chunks
from testing.upstream import Exchange, Plan, create_fake_openai


def create_app(
    chunks: int, delay: float, drop_at: float | None, tool_calls: bool = False, stamp: bool = False
) -> FastAPI:
    app = create_fake_openai(Chunks("chatcmpl-bench", "bench", created=0, compact=True))
    answer = "".join(f"w{i} " for i in range(chunks))
    app.state.server, app.state.usage, app.state.stamp = None, False, stamp
    if tool_calls:
        # One call whose arguments are the words: its id, type and name come with the first, as OpenAI's do.
        app.state.text = ""
        app.state.default_plan = Plan(delay=delay, tool_calls=[("bench", answer)], fragment=0, call_id="call_bench")
    else:
        app.state.text, app.state.default_plan = answer, Plan(delay=delay)
    if drop_at is not None:
        stop = int(chunks * drop_at)
        app.state.faults = lambda plan, _parts, partial: replace(plan, drop_after=stop) if partial is None else plan

    def fresh(exchange: Exchange) -> bool:
        return exchange.partial is None

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        exchanges: list[Exchange] = app.state.exchanges
        return {
            "requests": len(exchanges),
            "fresh_tokens": sum(e.tokens for e in exchanges if fresh(e)),
            "resumed_tokens": sum(e.tokens for e in exchanges if not fresh(e)),
        }

    @app.get("/stamps")
    async def stamps() -> dict[str, list[float]]:
        # A resumed answer's times would start mid-answer: only new ones count.
        sent: dict[str, list[float]] = {}
        for exchange in app.state.exchanges:
            if stamp and fresh(exchange):
                sent.setdefault(exchange.question, []).extend(exchange.stamps)
        return sent

    @app.post("/stats/reset")
    async def reset() -> dict[str, int]:
        app.state.exchanges.clear()
        app.state.requests.clear()
        return await stats()

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--drop-at", type=float, default=None)
    parser.add_argument("--tool-calls", action="store_true")
    parser.add_argument("--stamp", action="store_true", help="record each chunk's send time (GET /stamps)")
    args = parser.parse_args()
    app = create_app(args.chunks, args.delay, args.drop_at, args.tool_calls, args.stamp)
    # "critical": the breaks --drop-at makes on purpose are not errors worth a traceback.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="critical")


if __name__ == "__main__":
    main()
