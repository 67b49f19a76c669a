"""Section 3d: the delay a reader sees per chunk, from the upstream sending it to the client holding it.

The gateway shows a client only text that is durable (issue 37): in the answer log, or without one in
persistence. That costs a round trip per chunk, or per few chunks, between the upstream and the client, which
the time to first chunk does not show. bench.upstream ``--stamp`` records when it sent each token; the client
here records when its text grew, and a token counts as received once its word is whole (the gateway may relay
several upstream chunks as one, or cut them differently). Both clocks are ``time.monotonic()``: Linux's
CLOCK_MONOTONIC, one clock for every process on the machine.
"""

import asyncio
import itertools
import json
import statistics
import time
from dataclasses import dataclass

import httpx

_ASKED = itertools.count()

Arrival = tuple[float, int]  # when the client's text grew (time.monotonic()), and its length then


def word_ends(answer: str) -> list[int]:
    """Where each token's word ends in ``answer`` (its trailing space not needed to read it)."""
    ends, offset = [], 0
    for word in answer.split(" "):
        if word:
            ends.append(offset + len(word))
        offset += len(word) + 1
    return ends


def token_delays(sent: list[float], arrivals: list[Arrival], ends: list[int]) -> list[float]:
    """Seconds from each token's ``sent`` time to the first arrival whose text holds its whole word."""
    if len(sent) < len(ends):
        raise ValueError(f"{len(sent)} send times for {len(ends)} tokens")
    delays: list[float] = []
    token = 0
    for received, length in arrivals:
        while token < len(ends) and ends[token] <= length:
            delays.append(received - sent[token])
            token += 1
    if token < len(ends):
        raise ValueError(f"only {token} of {len(ends)} tokens arrived")
    return delays


def percentile(values: list[float], p: int) -> float:
    """The ``p``th percentile (1 to 99) of ``values``, inclusive of their extremes."""
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


async def _timed_stream(client: httpx.AsyncClient, url: str) -> tuple[str, list[Arrival], str]:
    question = f"Read me this slowly ({next(_ASKED)})"  # each its own: a repeated request is a retry
    body = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": question}]}
    arrivals: list[Arrival] = []
    parts: list[str] = []
    length = 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:])["choices"]
            if content := (choices[0]["delta"].get("content") if choices else None):
                received = time.monotonic()  # before the parsing of later lines: when the text was there
                parts.append(content)
                length += len(content)
                arrivals.append((received, length))
    return question, arrivals, "".join(parts)


async def _timed_streams(url: str, concurrency: int, count: int) -> list[tuple[str, list[Arrival], str]]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> tuple[str, list[Arrival], str]:
            async with gate:
                return await _timed_stream(client, url)

        return await asyncio.gather(*(one() for _ in range(count)))


def reader_delays(upstream_url: str, url: str, answer: str, concurrency: int, count: int) -> list[float]:
    """Every token's delay (seconds) in ``count`` streams, ``concurrency`` at a time, through ``url`` (or
    straight from ``upstream_url``, the same URL), from an upstream run with ``--stamp`` that answers
    ``answer``. Its stamps are cleared afterwards, so that they stay few."""
    done = asyncio.run(_timed_streams(url, concurrency, count))
    stamps = httpx.get(f"{upstream_url}/stamps", timeout=30).json()
    httpx.post(f"{upstream_url}/stats/reset", timeout=30)
    if broken := [text for _, _, text in done if text != answer]:
        raise RuntimeError(f"{len(broken)} streams were incomplete (first: {broken[0][-40:]!r})")
    ends = word_ends(answer)
    return [delay for question, arrivals, _ in done for delay in token_delays(stamps[question], arrivals, ends)]


@dataclass
class ReaderDelay:
    """The delays of every token of every stream, pooled: p50, p99 and the largest, in milliseconds."""

    streams: int
    concurrency: int
    tokens_per_second: float
    tokens: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, delays: list[float], streams: int, concurrency: int, tokens_per_second: float) -> "ReaderDelay":
        ms = [d * 1000 for d in delays]
        return cls(streams, concurrency, tokens_per_second, len(ms), percentile(ms, 50), percentile(ms, 99), max(ms))
