"""The chaos run's model: an OpenAI-compatible upstream that answers every question with ``answer_for`` (the
same words every time) or, as a model that samples, ``sampled_answer`` (new words on every request,
continuations included), and misbehaves at random (seeded): it drops connections mid-answer, answers 429 with
Retry-After or 503, stalls before its first word, and goes at varying speeds, unpaced included.

It continues an interrupted answer (a trailing assistant message) either ``exact`` (the rest of the text, as
llama.cpp does) or ``restart`` (a new message that first repeats the words the gateway asked for, as a
compliant OpenAI model does). A sampling one continues with fresh words after the partial answer; one that
answers the same marks a partial answer that is not the start of its answer, so a corrupted join is seen as a
wrong answer. GET /stats: per chat, every request it saw (when, the partial answer and anchor it was given, what
it sent, whether it finished), from which chaos/joins.py checks that a stored answer is what it sent.

    python -m chaos.upstream PORT --mode exact|restart --answers same|sampled --seed N
"""

import argparse
import asyncio
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chaos.answers import answer_for, key_of, sampled_answer
from testing.chunks import DONE, Chunks, Dropped, tokens
from testing.conversations import anchor, partial_answer, question

NOT_A_PREFIX = "<<the partial answer was not the start of this answer>>"
ANSWERS = ("same", "sampled")


CHUNKS = Chunks("chatcmpl-chaos", "chaos")


@dataclass
class Asked:
    """A request as the upstream reads it, and what it will send."""

    key: str
    partial: str
    anchor: str
    text: str  # the anchor, then the rest of the answer


@dataclass
class Sent:
    """What the upstream did with a request, as chaos/joins.py reads it."""

    at: float
    partial: str
    anchor: str
    sent: str = ""
    finished: bool = False


def asked(messages: list[dict[str, Any]], mode: str, sampling: random.Random | None) -> Asked:
    """The chat's key, the partial answer to continue and the anchor to repeat (if any), and the text to send:
    the answer, or the rest of it after the partial one (``sampling``: of a new answer, drawn with it)."""
    asking = question(messages)
    answer = answer_for(asking) if sampling is None else sampled_answer(asking, sampling)
    partial = partial_answer(messages)
    if partial is None:
        return Asked(key_of(asking), "", "", answer)
    joined = sampling is not None or answer.startswith(partial)  # a sampling model goes on from any text
    rest = answer[len(partial) :] if joined else NOT_A_PREFIX
    repeat = (anchor(messages) or "") if mode == "restart" else ""
    return Asked(key_of(asking), partial, repeat, repeat + rest)


def create_app(mode: str, answers: str, seed: int) -> Starlette:
    chance = random.Random(seed)
    # Its own generator, so that the faults come in the same order whichever the answers are.
    sampling = random.Random(seed + 1_000_003) if answers == "sampled" else None
    requests: dict[str, list[Sent]] = defaultdict(list)

    async def completions(request: Request) -> Response:
        body = await request.json()
        ask = asked(body["messages"], mode, sampling)
        record = Sent(time.time(), ask.partial, ask.anchor)
        requests[ask.key].append(record)
        roll = chance.random()
        if roll < 0.04:
            return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}}, 429, {"retry-after": "1"})
        if roll < 0.08:
            return JSONResponse({"error": {"message": "overloaded", "type": "server_error"}}, 503)
        parts = tokens(ask.text)
        drop_after = chance.randrange(len(parts)) if roll < 0.25 and parts else None
        stall = chance.uniform(0.3, 1.5) if chance.random() < 0.05 else 0.0
        delay = chance.choice((0.0, 0.005, 0.01, 0.02))

        async def stream() -> AsyncIterator[bytes]:
            await asyncio.sleep(stall)
            for index, part in enumerate(parts):
                if index == drop_after:
                    raise Dropped
                record.sent += part
                yield CHUNKS.delta(part)
                if delay:
                    await asyncio.sleep(delay)
            record.finished = True
            yield CHUNKS.delta(None, "stop")
            yield DONE

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def stats(_request: Request) -> Response:
        return JSONResponse({key: [asdict(record) for record in records] for key, records in requests.items()})

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]), Route("/stats", stats)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--mode", choices=("exact", "restart"), default="exact")
    parser.add_argument("--answers", choices=ANSWERS, default="sampled")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    uvicorn.run(create_app(args.mode, args.answers, args.seed), host="127.0.0.1", port=args.port, log_level="critical")


if __name__ == "__main__":
    main()
