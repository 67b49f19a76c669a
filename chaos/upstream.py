"""The chaos run's model: the fake OpenAI-compatible upstream of testing/upstream.py, configured to answer
every question with ``answer_for`` (the same words every time) or, as a model that samples, ``sampled_answer``
(new words on every request, continuations included), and to misbehave at random (seeded): it drops
connections mid-answer, answers 429 with Retry-After or 503, stalls before its first word, and goes at varying
speeds, unpaced included.

It continues an interrupted answer (a trailing assistant message) either ``exact`` (the rest of the text, as
llama.cpp does) or ``restart`` (a new message that first repeats the words the gateway asked for, as a
compliant OpenAI model does). A sampling one continues with fresh words after the partial answer; one that
answers the same marks a partial answer that is not the start of its answer, so a corrupted join is seen as a
wrong answer. GET /stats: per chat, every request it saw (when, the partial answer and anchor it was given, what
it sent, whether it finished), from which chaos/joins.py checks that a stored answer is what it sent.

    python -m chaos.upstream PORT --mode exact|restart --answers same|sampled --seed N
"""

import argparse
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import uvicorn
from fastapi import FastAPI

from chaos.answers import answer_for, key_of, sampled_answer
from testing.chunks import Chunks
from testing.conversations import Messages, partial_answer, question
from testing.upstream import Exchange, Faults, Plan, create_fake_openai

NOT_A_PREFIX = "<<the partial answer was not the start of this answer>>"
ANSWERS = ("same", "sampled")


def answering(sampling: random.Random | None) -> Callable[[Messages], str]:
    """The answer to a conversation: ``answer_for`` its question, or (``sampling``) ``sampled_answer`` drawn with
    it, which goes on from any partial answer, as a sampling model does."""

    def answer(messages: Messages) -> str:
        asked = question(messages)
        if sampling is None:
            return answer_for(asked)
        partial = partial_answer(messages) or ""
        return partial + sampled_answer(asked, sampling)[len(partial) :]

    return answer


def faults(chance: random.Random) -> Faults:
    """At random: 429 with Retry-After or 503, or a connection dropped mid-answer, a stall before the first
    word, and a pace."""

    def plan_for(plan: Plan, parts: list[str], _partial: str | None) -> Plan:
        roll = chance.random()
        if roll < 0.04:
            return replace(plan, status=429, retry_after="1", message="slow down", error_type="rate_limit")
        if roll < 0.08:
            return replace(plan, status=503, message="overloaded", error_type="server_error")
        drop_after = chance.randrange(len(parts)) if roll < 0.25 and parts else None
        stall = chance.uniform(0.3, 1.5) if chance.random() < 0.05 else 0.0
        delay = chance.choice((0.0, 0.005, 0.01, 0.02))
        return replace(plan, drop_after=drop_after, stall=stall, delay=delay)

    return plan_for


def sent(exchange: Exchange) -> dict[str, Any]:
    """A request as chaos/joins.py reads it (``Request.of``)."""
    return {
        "at": exchange.at,
        "partial": exchange.partial or "",
        "anchor": exchange.anchor,
        "sent": exchange.sent,
        "finished": exchange.finished,
    }


def create_app(mode: str, answers: str, seed: int) -> FastAPI:
    app = create_fake_openai(Chunks("chatcmpl-chaos", "chaos"))
    # Its own generator, so that the faults come in the same order whichever the answers are.
    app.state.answer = answering(random.Random(seed + 1_000_003) if answers == "sampled" else None)
    app.state.faults = faults(random.Random(seed))
    app.state.not_a_prefix = NOT_A_PREFIX
    app.state.default_plan = Plan(restart=mode == "restart")
    app.state.server, app.state.usage = None, False

    @app.get("/stats")
    async def stats() -> dict[str, list[dict[str, Any]]]:
        requests: dict[str, list[dict[str, Any]]] = {}
        for exchange in app.state.exchanges:
            requests.setdefault(key_of(exchange.question), []).append(sent(exchange))
        return requests

    return app


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
