"""The fake OpenAI-compatible streaming server of every suite: the tests (in their process), the benchmarks
(bench/upstream.py) and the chaos run (chaos/upstream.py) configure it, and `make run UPSTREAM=demo` runs it.

It answers every chat completion with TEXT (or ``app.state.text``, or ``app.state.answer`` of the conversation),
token by token, and continues it from a trailing assistant message exactly, the way llama.cpp does (stopping at
``max_tokens``, as it does), or, with ``Plan(restart=True)``, as a model that starts a new message and repeats
the words it is asked to. It can say it is llama-server (the default), vLLM or Mistral's API, and continues as
that server does (``app.state.server``). Each request takes the next scripted ``Plan`` (default: behave): drop
the connection after k tokens, answer an error status (with Retry-After), stall before the first token, go
slowly, call tools; ``app.state.faults`` may change it (the chaos run's random faults); ``POST /control/outage``
takes it down for a while (503 to everything, its streams cut). Every request is kept as an ``Exchange`` (what it
was asked, what it sent), from which the chaos run checks its joins and the benchmarks count tokens.

With ``app.state.sample = True`` it writes as a model that samples does: new words on every request, a
continuation's included (the partial answer, then words never sent before), so text a client was shown and
nobody saved is never written again.
"""

import asyncio
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from testing.chunks import DONE, Chunks, Dropped, tokens
from testing.conversations import anchor, partial_answer, question

TEXT = (
    "Lyon sits where the Rhone meets the Saone. Its old town keeps Renaissance courtyards, "
    "hidden passages called traboules, and small restaurants known as bouchons that serve "
    "quenelles, sausages and pralines. From the hill of Fourviere the whole city opens below."
)
MODEL = "fake-model"


VOCABULARY = (
    "amber",
    "basalt",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "granite",
    "harbor",
    "iris",
    "juniper",
    "kestrel",
    "lagoon",
    "meadow",
    "nectar",
    "orchid",
    "pebble",
    "quartz",
    "river",
    "saffron",
    "tundra",
    "umber",
    "violet",
    "willow",
    "xenon",
    "yarrow",
    "zephyr,",
    "alpine.",
    "brisk;",
    "crimson!",
    "dune?",
    "élan",
    "naïve",
    "café",
    "über",
)


def sampled(partial: str, words: int) -> str:
    """An answer as a sampling model writes it: ``partial`` (empty for a new one), then ``words`` words drawn
    afresh, whatever was drawn for the same question before."""
    draw = random.Random()
    drawn = " ".join(draw.choice(VOCABULARY) for _ in range(words))
    # Words, as a model writes them: no trailing space (a page shows none), one space after a cut word.
    return partial + (" " if partial and not partial[-1].isspace() else "") + drawn


@dataclass
class Plan:
    drop_after: int | None = None  # close the connection abruptly after this many tokens
    status: int | None = None  # answer this HTTP error instead of streaming
    retry_after: str | None = None
    message: str | None = None  # the error's message (else "scripted <status>")
    error_type: str = "fake"  # the error's type
    stall: float = 0.0  # seconds before the first token
    stall_headers: float = 0.0  # seconds before answering at all (a request that times out before its headers)
    delay: float = 0.0  # seconds between tokens
    repeat_overlap: int = 0  # on a continuation, first repeat this many characters of the partial answer
    restart: bool = False  # on a continuation, first repeat the words the instruction asks for ([[...]])
    echo_brackets: bool = False  # with ``restart``: repeat them in their brackets too, as a loose model does
    continue_with: str | None = None  # on a continuation, this instead of the rest of the text
    # Calls to make after the text, as (name, arguments): streamed as OpenAI does, a call's arguments in
    # fragments of ``fragment`` characters (0: a word and its spaces each, the first with the call's name);
    # each fragment counts as a token for ``drop_after``. Their ids differ from one attempt to the next, unless
    # ``call_id`` names them all.
    tool_calls: list[tuple[str, str]] = field(default_factory=list)
    fragment: int = 4
    call_id: str | None = None


@dataclass
class Exchange:
    """A request as the fake read it, and what it did with it."""

    at: float  # when it came (time.time())
    question: str
    partial: str | None  # the partial answer it was asked to continue; None: a new answer
    anchor: str  # the words it repeated first, as asked (a restarting model's continuation), else ""
    sent: str = ""  # the text it sent
    tokens: int = 0  # the chunks of text and of tool calls it sent
    finished: bool = False  # whether it sent them all
    stamps: list[float] = field(default_factory=list)  # when each chunk left (time.monotonic()), if stamped


def call_deltas(plan: Plan, attempt: int) -> list[dict[str, Any]]:
    """The ``delta.tool_calls`` items of the plan's calls."""
    deltas: list[dict[str, Any]] = []
    for index, (name, arguments) in enumerate(plan.tool_calls):
        call_id = plan.call_id or f"call_{attempt}_{index}"
        if plan.fragment:
            first, fragments = (
                "",
                [arguments[at : at + plan.fragment] for at in range(0, len(arguments), plan.fragment)],
            )
        else:
            first, *fragments = tokens(arguments) or [""]
        function = {"name": name, "arguments": first}
        deltas.append({"index": index, "id": call_id, "type": "function", "function": function})
        deltas += [{"index": index, "function": {"arguments": fragment}} for fragment in fragments]
    return deltas


def remaining_text(messages: list[dict[str, Any]], plan: Plan, text: str = TEXT, not_a_prefix: str = "") -> str:
    """``text``, or its rest when the last message is a partial answer to continue (``not_a_prefix`` when
    ``text`` does not start with it)."""
    partial = partial_answer(messages)
    if partial is None:
        return text
    rest = text[len(partial) :] if text.startswith(partial) else not_a_prefix
    if plan.continue_with is not None:
        rest = plan.continue_with
    repeat = partial[-plan.repeat_overlap :] if plan.repeat_overlap else ""
    if plan.restart and (asked := anchor(messages)) is not None:
        repeat = f"[[{asked}]]" if plan.echo_brackets else asked
    return repeat + rest


MISTRAL_REFUSAL = "Expected last role User or Tool (or Assistant with prefix True) for serving but got assistant"


def as_continued(server: str | None, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str] | None:
    """The messages ``server`` (``app.state.server``) answers and what its reply begins with; None: refused.

    A last assistant message is continued as llama-server does, but by "vllm" only with the flags vLLM needs
    (else it is a closed turn, and the answer starts anew after it), and by "mistral" only marked as a prefix
    (else refused, as Mistral's API does), the reply beginning with that prefix (as Mistral's does).
    """
    messages: list[dict[str, Any]] = body["messages"]
    last = messages[-1] if messages else {}
    if last.get("role") != "assistant":
        return messages, ""
    if server == "vllm" and (body.get("continue_final_message"), body.get("add_generation_prompt")) != (True, False):
        return messages[:-1], ""
    if server == "mistral":
        return (messages, str(last.get("content") or "")) if last.get("prefix") is True else None
    return messages, ""


# The faults of a request (its plan's, ``app.state.faults``): from the plan it was given, the tokens it would
# send and the partial answer it continues (None: a new one).
Faults = Callable[[Plan, list[str], str | None], Plan]


CHUNKS = Chunks("chatcmpl-fake", MODEL)


def reset(app: FastAPI, chunks: Chunks = CHUNKS) -> None:
    """Every setting of the fake ``app`` at its default, nothing scripted, nothing recorded."""
    app.state.plans = deque()
    app.state.requests = []
    app.state.exchanges = []  # an ``Exchange`` per request
    app.state.open_streams = 0  # streams being sent right now
    app.state.text = TEXT  # the answer to every question
    app.state.answer = None  # or a function of the conversation that answers it (the demo's, the chaos run's)
    app.state.not_a_prefix = ""  # what follows a partial answer the answer does not start with
    app.state.default_plan = Plan()  # what a request without a scripted plan gets
    app.state.faults = None  # or a ``Faults``: random ones (the chaos run's), a break in new answers (bench's)
    app.state.sample = False  # new words on every request (see the module's docstring)
    app.state.chunks = chunks  # its chunks' id and model
    app.state.usage = True  # a last chunk with the usage, when asked for it
    app.state.stamp = False  # each chunk's time of sending, in its ``Exchange``
    app.state.models = None  # the ids GET /v1/models lists; None: the server has no such route (a 404)
    app.state.outage_until = 0.0  # time.monotonic() until which it is down (POST /control/outage)
    # What it says it is when asked (chat_gateway/clients/upstream_probe.py), and so how it continues a last assistant
    # message (as_continued): "llama.cpp" answers GET /props, "vllm" GET /version and owns its models; "mistral"
    # (Mistral's API) and None say nothing.
    app.state.server = "llama.cpp"


def down(app: FastAPI) -> bool:
    until: float = app.state.outage_until
    return time.monotonic() < until


def add_outage_control(app: FastAPI) -> None:
    @app.post("/control/outage")
    async def outage(seconds: float) -> Any:
        """Down for ``seconds``: as a provider's outage behind its load balancer looks, every request answered
        503 and every stream being sent cut; the process stays up, its record of what it sent kept."""
        app.state.outage_until = time.monotonic() + seconds
        return {"down_for": seconds}


def create_fake_openai(chunks: Chunks = CHUNKS) -> FastAPI:
    app = FastAPI()
    reset(app, chunks)
    _serve_probes(app)
    add_outage_control(app)

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Any:
        body = await request.json()
        app.state.requests.append(body)
        if down(app):
            error = {"error": {"message": "upstream unavailable", "type": "server_error", "code": None}}
            return JSONResponse(error, status_code=503)
        plan: Plan = app.state.plans.popleft() if app.state.plans else app.state.default_plan
        read = as_continued(app.state.server, body)
        messages, echo = read if read is not None else (body["messages"], "")
        exchange, parts = _exchange(app, messages, echo, plan)
        if plan.stall_headers:
            await asyncio.sleep(plan.stall_headers)
        if app.state.faults is not None:
            plan = app.state.faults(plan, parts, exchange.partial)
        if plan.status is not None:
            headers = {"retry-after": plan.retry_after} if plan.retry_after else {}
            message = plan.message or f"scripted {plan.status}"
            error = {"error": {"message": message, "type": plan.error_type, "code": None}}
            return JSONResponse(error, status_code=plan.status, headers=headers)
        if read is None:
            return JSONResponse({"error": {"message": MISTRAL_REFUSAL, "type": "fake", "code": None}}, status_code=400)
        finish_reason = "tool_calls" if plan.tool_calls else "stop"
        if (limit := body.get("max_tokens")) is not None and len(parts) > limit:
            parts, finish_reason = parts[:limit], "length"
        calls = call_deltas(plan, len(app.state.requests)) if finish_reason != "length" else []
        usage = None
        if app.state.usage and (body.get("stream_options") or {}).get("include_usage"):
            usage = (sum(len(tokens(str(m.get("content") or ""))) for m in body["messages"]), len(parts))
        shown = _Shown(app.state.chunks, bool(body.get("logprobs")), exchange.stamps if app.state.stamp else None)
        stream = _stream(app, plan, exchange, [*parts, *calls], finish_reason, shown, usage)
        return StreamingResponse(stream, media_type="text/event-stream")

    return app


def _not_found() -> JSONResponse:
    return JSONResponse({"error": {"message": "no such route", "type": "fake"}}, status_code=404)


def _serve_probes(app: FastAPI) -> None:
    """What the fake says of itself when asked (``app.state.server``), and the models it lists."""

    @app.get("/props")
    async def props() -> Any:
        if app.state.server != "llama.cpp":
            return _not_found()
        settings = {"n_ctx": 4096, "params": {"temperature": 0.8}}
        body = {"default_generation_settings": settings, "total_slots": 1, "build_info": "b0-fake"}
        return JSONResponse(body, headers={"server": "llama.cpp"})

    @app.get("/version")
    async def version() -> Any:
        return {"version": "0.0.0-fake"} if app.state.server == "vllm" else _not_found()

    @app.get("/v1/models")
    async def models() -> Any:
        if app.state.models is None:
            return _not_found()
        owner = "vllm" if app.state.server == "vllm" else "fake"
        data = [{"id": model, "object": "model", "created": 1, "owned_by": owner} for model in app.state.models]
        return {"object": "list", "data": data}


def _exchange(app: FastAPI, messages: list[dict[str, Any]], echo: str, plan: Plan) -> tuple[Exchange, list[str]]:
    """A request's ``Exchange``, kept, and the tokens of the text it answers (before faults and ``max_tokens``)."""
    partial = partial_answer(messages)
    answer = app.state.answer(messages) if app.state.answer is not None else app.state.text
    if app.state.sample:
        answer = sampled(partial or "", max(0, len(tokens(answer)) - len(tokens(partial or ""))))
    text = echo + remaining_text(messages, plan, answer, app.state.not_a_prefix)
    repeated = (anchor(messages) or "") if plan.restart and partial is not None else ""
    exchange = Exchange(time.time(), question(messages), partial, repeated)
    app.state.exchanges.append(exchange)
    return exchange, tokens(text)


@dataclass(frozen=True)
class _Shown:
    """How a stream's chunks are written: their format, with logprobs, and whether each one's sending is stamped."""

    chunks: Chunks
    logprobs: bool
    stamps: list[float] | None


async def _stream(
    app: FastAPI,
    plan: Plan,
    exchange: Exchange,
    sent: list[str | dict[str, Any]],
    finish_reason: str,
    shown: _Shown,
    usage: tuple[int, int] | None,
) -> AsyncIterator[bytes]:
    """The completion's chunks: ``sent`` (text tokens, then tool calls) as ``plan`` says, its end and its usage."""
    app.state.open_streams += 1
    try:
        if plan.stall:
            await asyncio.sleep(plan.stall)
        for index, part in enumerate(sent):
            if (plan.drop_after is not None and index >= plan.drop_after) or down(app):
                raise Dropped  # uvicorn closes the connection mid-stream
            exchange.tokens += 1
            exchange.sent += part if isinstance(part, str) else ""
            if shown.stamps is not None:
                shown.stamps.append(time.monotonic())  # CLOCK_MONOTONIC: a client's clock too, on this machine
            yield (
                shown.chunks.delta(part, logprobs=shown.logprobs)
                if isinstance(part, str)
                else shown.chunks.delta(None, call=part)
            )
            if plan.delay:
                await asyncio.sleep(plan.delay)
        exchange.finished = True
        yield shown.chunks.delta(None, finish_reason)
        if usage is not None:
            yield shown.chunks.usage(*usage)
        yield DONE
    finally:
        app.state.open_streams -= 1


def demo_answer(messages: list[dict[str, Any]]) -> str:
    """The offline demo's answer (``make run UPSTREAM=demo``): the same for the same question, so an interrupted
    answer is continued exactly, and in Markdown, so the page shows what it renders."""
    quoted = " ".join(question(messages).split())[:200] or "nothing"
    return (
        f"You asked: *{quoted}*. This is the offline demo model (`testing/upstream.py`), not a real one: it "
        "answers every question with this text, a few words at a time, so there is time to try what the "
        "gateway promises.\n\n"
        "- **Reload the page**, or close the tab and open it again: the answer goes on meanwhile and shows up "
        "where it is.\n"
        "- **Stop the gateway** (Ctrl-C in `make run`) and start it again: the page reconnects and shows the "
        "rest, with no word twice and none missing.\n"
        "- **Stop** an answer, then **Resume** it: it is continued from its saved text.\n\n"
        "| where | what is kept |\n"
        "| --- | --- |\n"
        "| persistence | every message, and each answer as it grows |\n"
        "| gateway | nothing it could lose |\n\n"
        "```python\n"
        "from openai import OpenAI\n\n"
        'client = OpenAI(base_url="http://127.0.0.1:8100/v1", api_key="unused in open mode")\n'
        "```\n\n"
        "Any OpenAI-compatible server can take this model's place: see the README."
    )


if __name__ == "__main__":  # by hand: python -m testing.upstream [port] [--demo]
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible server on 127.0.0.1.")
    parser.add_argument("port", type=int, nargs="?", default=8200)
    parser.add_argument("--demo", action="store_true", help="the offline demo: a Markdown answer, 20 words a second")
    arguments = parser.parse_args()
    fake = create_fake_openai()
    if arguments.demo:
        fake.state.answer, fake.state.default_plan, fake.state.models = demo_answer, Plan(delay=0.05), ["demo"]
    uvicorn.run(fake, host="127.0.0.1", port=arguments.port)
