"""A chat's route: the (upstream, model) candidates that may answer it, in order, and the one answering now.

The first is the asked model's first upstream; then its other upstreams (another deployment of the same model),
in the file's order; then each fallback model's. Before the first word, a passing failure (429, 5xx, a
connection that fails, a timeout) moves the chat to the next at once (``fall_back``); once words were sent, the
answer stays where it is, retried under ``retry.upstream``, and once those retries are spent it goes on on the next
(``move_on``), from its saved text. A candidate whose breaker is open is skipped.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from openai import AsyncStream
from openai.types.chat import ChatCompletionMessageParam

from chat_gateway.answers.prompt import Continuation
from chat_gateway.clients.retry import Transient, is_transient, retry_after_seconds
from chat_gateway.clients.upstream import open_stream
from chat_gateway.metrics import FALLBACKS
from chat_gateway.upstreams.breaker import BreakerState
from chat_gateway.upstreams.limits import LimitReached
from chat_gateway.upstreams.upstream import Upstream

logger = logging.getLogger(__name__)

# The most a chat waits for an upstream's Retry-After before asking the same upstream for another model.
MAX_RETRY_AFTER_SECONDS = 5.0

Request = tuple[list[ChatCompletionMessageParam], Mapping[str, Any]]


class CoolingDown(Transient):
    """Every candidate's breaker is open: retried (``retry.upstream``) until one lets a probe through."""


@dataclass(frozen=True)
class Candidate:
    upstream: Upstream
    model: str


class Route:
    """One chat's candidates; ``current`` answers. Holds the place in its upstream's limit while it streams."""

    def __init__(self, model: str, candidates: list[Candidate]) -> None:
        assert candidates, "a route has somewhere to go"
        self.model = model  # as asked (an alias resolved)
        self.candidates = candidates
        self._at = 0
        self._held: Upstream | None = None  # whose limit this route holds a place in
        self._streaming = False  # a stream of ``current`` opened: its failure is the upstream's

    @property
    def current(self) -> Candidate:
        return self.candidates[self._at]

    def admit(self) -> None:
        """Refuse (429, Retry-After) a chat that no candidate has room for, before anything is stored."""
        limits = [candidate.upstream.limit for candidate in self.candidates]
        if not any(limit.has_room() for limit in limits):
            raise limits[0].refusal()

    async def open(self, request: Callable[[Candidate], Request]) -> AsyncStream[object]:
        """Open a stream on the current candidate, or on the next one its breaker (or limit) lets through;
        ``request`` gives the messages and options a candidate is sent."""
        self.release()
        while True:
            candidate = self.current
            upstream = candidate.upstream
            if not upstream.breaker.skips():  # known before waiting for a place in its queue
                try:
                    await upstream.limit.acquire()
                except LimitReached:
                    if self._advance():
                        continue
                    raise
                if upstream.breaker.allow():  # False only if another request became its probe meanwhile
                    self._held = upstream
                    upstream.streams_changed()
                    return await self._open_on(candidate, request)
                upstream.limit.release()
            if not self._advance():
                break
        self._at = 0  # the next attempt starts again from the first
        retry_in = min(candidate.upstream.breaker.retry_in() for candidate in self.candidates)
        raise CoolingDown(f"every upstream of {self.model!r} is cooling down ({retry_in:.0f} s to the next probe)")

    async def open_new(
        self, messages: list[ChatCompletionMessageParam], options: Mapping[str, Any]
    ) -> AsyncStream[object]:
        """A new answer's stream: sent the same whichever candidate takes it."""
        return await self.open(lambda _candidate: (messages, options))

    async def open_continuing(
        self, partial: str, prompt: list[ChatCompletionMessageParam], options: Mapping[str, Any]
    ) -> AsyncStream[object]:
        """A stream that continues ``partial`` (or starts the answer, when empty), asked of each candidate in
        the way its upstream continues an answer (``Continuation``)."""

        def request(candidate: Candidate) -> Request:
            join = Continuation(partial, candidate.upstream.continuation)
            return join.messages(prompt), {**options, **join.request_fields()}

        return await self.open(request)

    async def _open_on(self, candidate: Candidate, request: Callable[[Candidate], Request]) -> AsyncStream[object]:
        upstream = candidate.upstream
        messages, options = request(candidate)
        began = time.monotonic()
        try:
            stream = await open_stream(upstream.client, candidate.model, messages, options)
        except BaseException as exc:
            self.release()
            if is_transient(exc) or upstream.breaker.state == BreakerState.HALF_OPEN:  # a probe that failed
                upstream.failed()
            raise
        upstream.opened(time.monotonic() - began)
        self._streaming = True
        return stream

    def failed(self, exc: BaseException) -> None:
        """An attempt ended with ``exc``: a failure of the upstream's, when its stream was open and it passes."""
        if self._streaming and is_transient(exc):
            self.current.upstream.failed()
        self._streaming = False

    async def fall_back(self, exc: BaseException) -> bool:
        """Before the first word: whether the chat moved to its next candidate after ``exc`` (a passing failure).
        Past the last, the next attempt starts again from the first."""
        if not is_transient(exc) or isinstance(exc, CoolingDown):
            return False
        failed = self.current.upstream
        if not self._advance():
            self._at = 0
            return False
        logger.warning("upstream %s failed before the first word (%r): trying %s", failed.name, exc, self.describe())
        FALLBACKS.inc()
        if self.current.upstream is failed and (asked := retry_after_seconds(exc)) is not None:
            await asyncio.sleep(min(asked, MAX_RETRY_AFTER_SECONDS))  # it said when it can take another
        return True

    def move_on(self, exc: BaseException) -> bool:
        """Mid-answer, the current candidate's retries spent on a passing failure: whether the answer goes on on
        the next candidate (from its saved text, in that upstream's way of continuing). Past the last, it fails."""
        if not is_transient(exc) or isinstance(exc, CoolingDown):
            return False
        failed = self.current
        if not self._advance():
            return False
        logger.warning(
            "%s on %s failed mid-answer (%r): the answer goes on on %s",
            failed.model,
            failed.upstream.name,
            exc,
            self.describe(),
        )
        FALLBACKS.inc()
        return True

    def _advance(self) -> bool:
        if self._at + 1 < len(self.candidates):
            self._at += 1
            return True
        return False

    def release(self) -> None:
        """Give back the place in the limit held for the last stream (at its end, or before the next)."""
        if self._held is not None:
            self._held.limit.release()
            self._held.streams_changed()
            self._held = None

    def describe(self) -> str:
        return f"{self.current.model} on {self.current.upstream.name}"
