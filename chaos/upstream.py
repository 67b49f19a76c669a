"""The chaos run's model: an OpenAI-compatible upstream that answers every question with ``answer_for`` and
misbehaves at random (seeded): it drops connections mid-answer, answers 429 with Retry-After or 503, stalls
before its first word, and goes at varying speeds, unpaced included.

It continues an interrupted answer (a trailing assistant message) either ``exact`` (the rest of the text, as
llama.cpp does) or ``restart`` (a new message that first repeats the words the gateway asked for, as a
compliant OpenAI model does). A partial answer that is not the start of the right answer gets a marker, so a
corrupted join is seen as a wrong answer. GET /stats: per chat, the characters sent and when each request came.

    python -m chaos.upstream PORT --mode exact|restart --seed N
"""

import argparse
import asyncio
import json
import random
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chaos.answers import answer_for, key_of, tokens

NOT_A_PREFIX = "<<the partial answer was not the start of this answer>>"


class Broken(Exception):
    """Raised mid-stream: uvicorn then closes the connection, as a failing upstream does."""


def _chunk(content: str | None, finish_reason: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    body = {
        "id": "chatcmpl-chaos",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "chaos",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def _text_to_send(messages: list[dict[str, Any]], mode: str) -> tuple[str, str]:
    """The chat's key and what to send: the answer, or the rest of it after a partial one."""
    question = next(str(m.get("content")) for m in reversed(messages) if m.get("role") == "user")
    answer = answer_for(question)
    if messages[-1].get("role") != "assistant":
        return key_of(question), answer
    partial = str(messages[-1].get("content") or "")
    rest = answer[len(partial) :] if answer.startswith(partial) else NOT_A_PREFIX
    if mode == "restart" and (asked := re.search(r"\[\[(.*)\]\]", str(messages[-2].get("content")), re.DOTALL)):
        rest = asked.group(1) + rest
    return key_of(question), rest


def create_app(mode: str, seed: int) -> Starlette:
    chance = random.Random(seed)
    sent: dict[str, int] = defaultdict(int)
    requested: dict[str, list[float]] = defaultdict(list)

    async def completions(request: Request) -> Response:
        body = await request.json()
        key, text = _text_to_send(body["messages"], mode)
        requested[key].append(time.time())
        roll = chance.random()
        if roll < 0.04:
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}}, 429, {"retry-after": "1"})
        if roll < 0.08:
            return JSONResponse({"error": {"message": "overloaded", "type": "server_error"}}, 503)
        parts = tokens(text)
        drop_after = chance.randrange(len(parts)) if roll < 0.25 and parts else None
        stall = chance.uniform(0.3, 1.5) if chance.random() < 0.05 else 0.0
        delay = chance.choice((0.0, 0.005, 0.01, 0.02))

        async def stream() -> AsyncIterator[bytes]:
            await asyncio.sleep(stall)
            for index, part in enumerate(parts):
                if index == drop_after:
                    raise Broken
                sent[key] += len(part)
                yield _chunk(part)
                if delay:
                    await asyncio.sleep(delay)
            yield _chunk(None, "stop")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def stats(_request: Request) -> Response:
        return JSONResponse({key: {"sent": sent[key], "requested": requested[key]} for key in requested})

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]), Route("/stats", stats)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--mode", choices=("exact", "restart"), default="exact")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    uvicorn.run(create_app(args.mode, args.seed), host="127.0.0.1", port=args.port, log_level="critical")


if __name__ == "__main__":
    main()
