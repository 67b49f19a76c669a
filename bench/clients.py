"""The benchmarks' clients: OpenAI-compatible streams, timed, their text checked whole."""

import asyncio
import itertools
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.processes import CHUNKS

ANSWER = "".join(f"w{i} " for i in range(CHUNKS))
QUESTION = {"role": "user", "content": "Tell me about Lyon."}


@dataclass
class Stream:
    started: float  # perf_counter
    first_chunk: float  # seconds after started
    total: float
    chunks: int
    text: str


def _chunk_text(data: dict[str, Any]) -> str:
    """A Chat Completions chunk's text; a tool call's arguments count as its text (section 3b)."""
    choices = data["choices"]
    delta = choices[0]["delta"] if choices else {}
    arguments = "".join(call["function"].get("arguments") or "" for call in delta.get("tool_calls") or [])
    return str(delta.get("content") or arguments)


def _event_text(data: dict[str, Any]) -> str:
    """A Responses API event's text (section 3c)."""
    return str(data.get("delta") or "") if data.get("type") == "response.output_text.delta" else ""


_ASKED = itertools.count()


async def stream(client: httpx.AsyncClient, url: str, responses: bool = False) -> Stream:
    # Each chat its own question: the same request again within a minute is a retry (the README), answered with
    # the first one's answer instead of relayed.
    question = QUESTION | {"content": f"{QUESTION['content']} ({next(_ASKED)})"}
    if responses:
        path, body = "/v1/responses", {"model": "bench", "stream": True, "input": question["content"]}
    else:
        path, body = "/v1/chat/completions", {"model": "bench", "stream": True, "messages": [question]}
    text_of = _event_text if responses else _chunk_text
    started = time.perf_counter()
    first, parts = 0.0, []
    async with client.stream("POST", f"{url}{path}", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            if content := text_of(json.loads(line[6:])):
                first = first or time.perf_counter() - started
                parts.append(content)
    return Stream(started, first, time.perf_counter() - started, len(parts), "".join(parts))


async def streams(
    url: str, concurrency: int, count: int, headers: dict[str, str] | None = None, responses: bool = False
) -> list[Stream]:
    """``count`` streams, ``concurrency`` at a time (through the Responses API with ``responses``)."""
    limits = httpx.Limits(max_connections=concurrency + 8)
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> Stream:
            async with gate:
                return await stream(client, url, responses)

        results = await asyncio.gather(*(one() for _ in range(count)))
    # The gateway may relay several upstream chunks as one, so the text is what must be whole.
    if broken := [s for s in results if s.text != ANSWER]:
        raise RuntimeError(f"{len(broken)} streams were incomplete (first: {broken[0].text[-40:]!r})")
    return results


def p50_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def warm_up(url: str, headers: dict[str, str] | None = None) -> None:
    """A few streams first: connections, caches."""
    asyncio.run(streams(url, 2, 4, headers))
