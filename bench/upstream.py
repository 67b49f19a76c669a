"""A fast OpenAI-compatible upstream for the gateway benchmarks, run in its own process.

Every answer is the same ``--chunks`` tokens ("w0 w1 w2 ..."), one per SSE chunk, ``--delay`` seconds
apart. A request whose last message is a partial answer (the gateway resuming) gets only the rest.
With ``--drop-at F``, a fresh (not resumed) answer breaks off after that fraction of its tokens. With
``--tool-calls``, every answer is one tool call instead, its arguments those tokens, one fragment per chunk.
GET /stats tells how many completion tokens were sent, fresh and resumed; POST /stats/reset zeroes them.

    python -m bench.upstream PORT [--chunks 200] [--delay 0] [--drop-at 0.8]
"""

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class Broken(Exception):
    """Raised mid-stream: uvicorn then closes the connection, as a failing upstream does."""


def _chunk(content: str | None, finish_reason: str | None = None, call: dict[str, Any] | None = None) -> bytes:
    delta: dict[str, Any] = {"content": content} if content is not None else {}
    if call is not None:
        delta = {"tool_calls": [call]}
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench",
        "choices": [choice],
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _call_chunks(words: list[str]) -> list[bytes]:
    """One call whose arguments are ``words``: its id, type and name come with the first fragment, as OpenAI's do."""
    head = {"index": 0, "id": "call_bench", "type": "function", "function": {"name": "bench", "arguments": words[0]}}
    return [_chunk(None, call=head)] + [
        _chunk(None, call={"index": 0, "function": {"arguments": w}}) for w in words[1:]
    ]


def create_app(chunks: int, delay: float, drop_at: float | None, tool_calls: bool = False) -> Starlette:
    words = [f"w{i} " for i in range(chunks)]
    encoded = _call_chunks(words) if tool_calls else [_chunk(word) for word in words]
    finish_reason = "tool_calls" if tool_calls else "stop"
    answer = "".join(words)
    stats = {"requests": 0, "fresh_tokens": 0, "resumed_tokens": 0}

    async def completions(request: Request) -> Response:
        body = await request.json()
        stats["requests"] += 1
        messages: list[dict[str, Any]] = body["messages"]
        partial = messages[-1].get("content") or "" if messages[-1].get("role") == "assistant" else None
        resumed = partial is not None
        # Continue after the words already given (a resumed prefix may end mid-word).
        start = len(partial.split()) if partial and answer.startswith(partial.rstrip()) else 0
        stop = int(chunks * drop_at) if drop_at is not None and not resumed else chunks

        async def stream() -> AsyncIterator[bytes]:
            for index in range(start, chunks):
                if index >= stop:
                    raise Broken
                stats["resumed_tokens" if resumed else "fresh_tokens"] += 1
                yield encoded[index]
                if delay:
                    await asyncio.sleep(delay)
            yield _chunk(None, finish_reason)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def get_stats(_: Request) -> Response:
        return JSONResponse(stats)

    async def reset(_: Request) -> Response:
        stats.update(dict.fromkeys(stats, 0))
        return JSONResponse(stats)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/stats", get_stats),
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
    args = parser.parse_args()
    app = create_app(args.chunks, args.delay, args.drop_at, args.tool_calls)
    # "critical": the breaks --drop-at makes on purpose are not errors worth a traceback.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="critical")


if __name__ == "__main__":
    main()
