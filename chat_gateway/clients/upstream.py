"""The LLM side: opening a stream, reading its chunks, continuing an interrupted one (retried as ``retry.upstream``)."""

import asyncio
import json
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx2
from httpx_aiohttp.httpx2.transport import AiohttpResponseStream, AiohttpTransport, map_aiohttp_exceptions
from openai import DEFAULT_CONNECTION_LIMITS, APIError, AsyncOpenAI, AsyncStream, DefaultAioHttpClient
from openai._streaming_cleanup import drain_response_async
from openai.types.chat import ChatCompletionMessageParam
from pydantic_core import from_json

from chat_gateway.config import Settings
from chat_gateway.metrics import TOKENS
from shared import storable_text
from shared.identity import CHARS_PER_TOKEN
from shared.resources import FINISH_REASON_MAX_LENGTH

logger = logging.getLogger(__name__)


@dataclass
class Chunk:
    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    tool_calls: list[Any] | None = None  # the deltas of calls, as sent: whole only at the end (answers/tool_calls.py)
    logprobs: list[Any] | None = None  # the text's tokens' logprobs, when asked for: relayed, never stored


@dataclass
class Usage:
    """Tokens over every attempt of one answer: what it really cost."""

    totals: dict[str, int] = field(default_factory=dict)

    def add(self, usage: dict[str, Any]) -> None:
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            if isinstance(usage.get(key), int):
                self.totals[key] = self.totals.get(key, 0) + usage[key]


class _Chunks(AsyncStream[object]):
    """The SDK's stream with less work per chunk: the SDK's own loop checks every chunk against ``typing.Mapping``
    (an ABC check) and passes it through the client's response processing, which returns it unchanged for
    ``cast_to=object``, inside one more generator. The SDK's SSE decoding and errors are kept, and so is its error
    for a chunk that carries one."""

    def __aiter__(self) -> AsyncIterator[object]:
        return self._iterator

    async def __stream__(self) -> AsyncIterator[object]:
        response = self.response
        try:
            async for sse in self._iter_events():
                if sse.data.startswith("[DONE]"):
                    if response.http_version == "HTTP/1.1":  # read to its end, so its connection is reused
                        await drain_response_async(response)
                    break
                data = _parsed(sse.data)
                if isinstance(data, dict) and (error := data.get("error")):
                    message = error.get("message") if isinstance(error, dict) else None
                    if not message or not isinstance(message, str):
                        message = "An error occurred during streaming"
                    raise APIError(message=message, request=response.request, body=error)
                yield data
        finally:
            await response.aclose()


def _parsed(data: str) -> object:
    """A chunk's JSON, by pydantic-core's parser (a third of json.loads's CPU), or by json.loads when it refuses
    what json.loads takes: an escaped lone surrogate, half of a pair a UTF-16 server split (``read_chunks``)."""
    try:
        return from_json(data)
    except ValueError:
        return json.loads(data)


async def open_stream(
    client: AsyncOpenAI,
    model: str,
    messages: list[ChatCompletionMessageParam],
    options: Mapping[str, Any] | None = None,
) -> AsyncStream[object]:
    """Send a streamed completion request; returns once the upstream has answered with its headers.

    Through the SDK's generic ``post`` with ``cast_to=object``, so each chunk comes as the JSON the
    upstream sent: building the SDK's typed chunk models cost more CPU than all the rest of the relay
    (docs/benchmarks.md), for the four fields read here. Errors are raised by the SDK as usual.
    """
    # The answer's options first: what makes this a stream the gateway can read is not theirs to change.
    body = {
        **(options or {}),
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    # The URL whole: a path is parsed, then the base URL joined with it parsed again, for every stream.
    url = f"{client.base_url}chat/completions"
    return await client.post(url, cast_to=object, body=body, stream=True, stream_cls=_Chunks)


TOKEN_LIMITS = ("max_tokens", "max_completion_tokens")
TOKENS_BATCH = 50  # text chunks counted into TOKENS at once: about a second's worth at a hosted model's pace


def options_to_continue(options: Mapping[str, Any], partial: str) -> dict[str, Any] | None:
    """The options to continue ``partial`` with: token limits hold for the whole answer, so what the
    partial answer spent (estimated from its length) comes off them. None when a limit is used up.
    """
    continued = dict(options)
    spent = math.ceil(len(partial) / CHARS_PER_TOKEN)
    for key in TOKEN_LIMITS:
        if isinstance(limit := options.get(key), int) and spent:
            if limit <= spent:
                return None
            continued[key] = limit - spent
    return continued


def _label(value: object, max_length: int) -> str | None:
    """A finish reason as a column holds it: an odd one from the upstream is stored clipped,
    since refusing it would fail the answer it came with."""
    return storable_text(value[:max_length]) if isinstance(value, str) and value else None


async def read_chunks(stream: AsyncStream[object]) -> AsyncGenerator[Chunk, None]:
    """The stream's chunks (closed at the end, or when the reader stops early).

    Their text is made storable (``storable_text``) before anyone sees it, so what is relayed is what is
    stored: a NUL or a broken surrogate from the model would otherwise have every save of the answer refused.
    """
    held = ""  # a high surrogate whose other half may open the next chunk (a pair split by a UTF-16 server)
    tokens = 0  # text chunks not yet counted into TOKENS: its lock for every chunk cost the relay CPU
    try:
        async for event in stream:
            if not isinstance(event, dict):
                continue
            usage = event.get("usage")
            # The model the chunk names is not read: an answer is the configured model's (answers/parts.py).
            chunk = Chunk(usage=usage if isinstance(usage, dict) else None)
            choices = event.get("choices")
            if choices and isinstance(choices, list) and isinstance(choice := choices[0], dict):
                content = None
                if isinstance(delta := choice.get("delta"), dict):
                    content = delta.get("content")
                    if isinstance(calls := delta.get("tool_calls"), list):
                        chunk.tool_calls = calls
                text = held + content if isinstance(content, str) else held
                held = text[-1] if text and "\ud800" <= text[-1] <= "\udbff" else ""
                chunk.text = storable_text(text[: len(text) - len(held)])
                if (reason := choice.get("finish_reason")) is not None:
                    chunk.finish_reason = _label(reason, FINISH_REASON_MAX_LENGTH)
                if isinstance(logprobs := choice.get("logprobs"), dict) and isinstance(logprobs.get("content"), list):
                    chunk.logprobs = logprobs["content"]
            if chunk.text and (tokens := tokens + 1) == TOKENS_BATCH:
                TOKENS.inc(tokens)
                tokens = 0
            yield chunk
        if held:
            tokens += 1
            yield Chunk(text=storable_text(held))
    finally:
        TOKENS.inc(tokens)
        await stream.close()


async def discard(opening: "asyncio.Task[AsyncStream[object]]") -> None:
    """Abandon a stream opened ahead of time: cancel the request, or close the stream it opened."""
    opening.cancel()
    await asyncio.wait([opening])
    if not opening.cancelled() and opening.exception() is None:
        await opening.result().close()


class _FailAfterArrived(AiohttpResponseStream):
    """A response body whose connection's failure comes after the data that arrived ahead of it.

    aiohttp raises a failed connection's error on the next read even when data it received before is still
    unread: the last words of a stream that breaks off would be lost, and generated (and paid for) again.
    Here that data is read first (from aiohttp's buffer: ``_read_nowait`` is the one read that does not look
    at the failure first; tests/chat_gateway/clients/test_upstream.py holds this to aiohttp's behaviour).
    """

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._aiohttp_response.content
        with map_aiohttp_exceptions():
            while True:
                try:
                    chunk = await content.readany()
                except aiohttp.ClientError:
                    if arrived := content._read_nowait(-1):
                        yield arrived
                    raise
                if not chunk:
                    return
                yield chunk


class _UpstreamTransport(AiohttpTransport):
    """aiohttp under the SDK, as its DefaultAioHttpClient has it, but for the bodies: ``_FailAfterArrived``."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        if isinstance(response.stream, AiohttpResponseStream):
            response.stream = _FailAfterArrived(response.stream._aiohttp_response)
        return response


def create_client(settings: Settings) -> AsyncOpenAI | None:
    """The client of the single-upstream settings (OPENAI_*); None without a key."""
    if settings.openai_api_key is None:
        return None
    return open_client(
        settings.openai_api_key.get_secret_value(), settings.openai_base_url, settings.upstream_timeout_seconds
    )


def open_client(api_key: str, base_url: str | None, timeout_seconds: float) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,  # tenacity is the one retry loop
        timeout=timeout_seconds,
        # The SDK's own aiohttp transport: reading a stream through httpcore and anyio cost far more CPU.
        http_client=DefaultAioHttpClient(transport=_UpstreamTransport(limits=DEFAULT_CONNECTION_LIMITS)),
    )
