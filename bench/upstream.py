"""A fast OpenAI-compatible upstream for the gateway benchmarks, run in its own process.

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
import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from testing.chunks import DONE, Chunks, Dropped
from testing.conversations import partial_answer, question

CHUNKS = Chunks("chatcmpl-bench", "bench", created=0, compact=True)


def _call_chunks(words: list[str]) -> list[bytes]:
    """One call whose arguments are ``words``: its id, type and name come with the first fragment, as OpenAI's do."""
    head = {"index": 0, "id": "call_bench", "type": "function", "function": {"name": "bench", "arguments": words[0]}}
    return [CHUNKS.delta(None, call=head)] + [
        CHUNKS.delta(None, call={"index": 0, "function": {"arguments": w}}) for w in words[1:]
    ]


def create_app(
    chunks: int, delay: float, drop_at: float | None, tool_calls: bool = False, stamp: bool = False
) -> Starlette:
    words = [f"w{i} " for i in range(chunks)]
    encoded = _call_chunks(words) if tool_calls else [CHUNKS.delta(word) for word in words]
    finish_reason = "tool_calls" if tool_calls else "stop"
    answer = "".join(words)
    stats = {"requests": 0, "fresh_tokens": 0, "resumed_tokens": 0}
    stamps: dict[str, list[float]] = {}

    async def completions(request: Request) -> Response:
        body = await request.json()
        stats["requests"] += 1
        messages: list[dict[str, Any]] = body["messages"]
        partial = partial_answer(messages)
        resumed = partial is not None
        # Continue after the words already given (a resumed prefix may end mid-word).
        start = len(partial.split()) if partial and answer.startswith(partial.rstrip()) else 0
        stop = int(chunks * drop_at) if drop_at is not None and not resumed else chunks
        # A resumed answer's times would start mid-answer: only fresh ones are stamped.
        sent = stamps.setdefault(question(messages), []) if stamp and not resumed else None

        async def stream() -> AsyncIterator[bytes]:
            for index in range(start, chunks):
                if index >= stop:
                    raise Dropped
                stats["resumed_tokens" if resumed else "fresh_tokens"] += 1
                if sent is not None:
                    sent.append(time.monotonic())  # CLOCK_MONOTONIC: the client's clock too, on this machine
                yield encoded[index]
                if delay:
                    await asyncio.sleep(delay)
            yield CHUNKS.delta(None, finish_reason)
            yield DONE

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def get_stats(_: Request) -> Response:
        return JSONResponse(stats)

    async def get_stamps(_: Request) -> Response:
        return JSONResponse(stamps)

    async def reset(_: Request) -> Response:
        stats.update(dict.fromkeys(stats, 0))
        stamps.clear()
        return JSONResponse(stats)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/stats", get_stats),
            Route("/stamps", get_stamps),
            Route("/stats/reset", reset, methods=["POST"]),
        ]
    )


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
