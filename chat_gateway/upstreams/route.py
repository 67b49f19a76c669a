"""A chat's route: the (upstream, model) candidates that may answer it, in order, and the one answering now.

The first is the asked model's first upstream; then its other upstreams (another deployment of the same model),
in the file's order; then each fallback model's. Before the first word, a passing failure (429, 5xx, a
connection that fails, a timeout) moves the chat to the next at once (``fall_back``); once words were sent, the
answer stays where it is, retried under ``retry.upstream``, and once those retries are spent it goes on on the next
(``move_on``), from its saved text. A candidate whose breaker is open is skipped; when every one is (or every one is
full), a new chat is refused at once (``admit``: 503 or 429, with Retry-After) and an answer under way waits for the
first to take it again (``Unavailable``, waited for by chat_gateway/answers/generation.py).
"""

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from openai import AsyncStream
from openai.types.chat import ChatCompletionMessageParam

from chat_gateway.answers.prompt import Continuation
from chat_gateway.clients.retry import Unavailable, is_transient, retry_after_seconds
from chat_gateway.clients.upstream import open_stream
from chat_gateway.metrics import FALLBACKS
from chat_gateway.upstreams.breaker import BreakerState
from chat_gateway.upstreams.limits import LimitReached
from chat_gateway.upstreams.upstream import Upstream
from shared import ErrorCode, ServiceUnavailable

logger = logging.getLogger(__name__)

# The most a chat waits for an upstream's Retry-After before asking the same upstream for another model.
MAX_RETRY_AFTER_SECONDS = 5.0

# How often an answer that no upstream can take asks again when none says when it may (a probe is running, or
# every one is full).
UNAVAILABLE_POLL_SECONDS = 0.25

Request = tuple[list[ChatCompletionMessageParam], Mapping[str, Any]]


class CoolingDown(Unavailable):
    """Every candidate's breaker is open: the answer waits for the earliest probe (``retry_in``)."""


class AllBusy(Unavailable):
    """Every candidate left is at its concurrency limit, its queue full or its wait over: the answer waits."""


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
        self._streaming = False  # a stream of ``current`` opened, not yet finished nor failed
        self._waiting_since: float | None = None  # when it first waited for an upstream (``wait``)

    @property
    def current(self) -> Candidate:
        return self.candidates[self._at]

    def admit(self) -> None:
        """Refuse a chat no candidate can take, before anything is stored: 503 while every one cools down after
        failures, 429 while every one is full; each with Retry-After."""
        if self._all_cooling_down():
            retry_after = max(1, math.ceil(self.retry_in()))
            raise ServiceUnavailable(
                f"every upstream of {self.model!r} is cooling down after failures; retry in {retry_after} s",
                code=ErrorCode.UPSTREAM_COOLING_DOWN,
                headers={"Retry-After": str(retry_after)},
            )
        limits = [candidate.upstream.limit for candidate in self.candidates]
        if not any(limit.has_room() for limit in limits):
            raise limits[0].refusal()

    def _all_cooling_down(self) -> bool:
        return all(candidate.upstream.breaker.skips() for candidate in self.candidates)

    def retry_in(self) -> float:
        """Seconds until the first of the candidates' breakers lets a probe through."""
        return min(candidate.upstream.breaker.retry_in() for candidate in self.candidates)

    async def open(self, request: Callable[[Candidate], Request]) -> AsyncStream[object]:
        """Open a stream on the current candidate, or on the next one its breaker (or limit) lets through;
        ``request`` gives the messages and options a candidate is sent."""
        self.release()
        busy = None
        while True:
            candidate = self.current
            upstream = candidate.upstream
            if not upstream.breaker.skips():  # known before waiting for a place in its queue
                try:
                    await upstream.limit.acquire()
                except LimitReached as exc:
                    busy = exc
                    if self._advance():
                        continue
                    break
                if upstream.breaker.allow():  # False only if another request became its probe meanwhile
                    self._held = upstream
                    upstream.streams_changed()
                    return await self._open_on(candidate, request)
                upstream.limit.release()
            if not self._advance():
                break
        self._at = 0  # the next attempt starts again from the first
        if busy is not None:  # the last had no place for it: places come free as streams end
            raise AllBusy(f"every upstream of {self.model!r} that is not cooling down is full ({busy})", 0.0)
        retry_in = self.retry_in()
        raise CoolingDown(f"every upstream of {self.model!r} is cooling down ({retry_in:.0f} s to its probe)", retry_in)

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

    def finished(self) -> None:
        """The stream of the current candidate reached its end: the one success its breaker counts."""
        if self._streaming:
            self.current.upstream.succeeded()
        self._streaming = False

    def failed(self, exc: BaseException) -> None:
        """An attempt ended with ``exc``: a failure of the upstream's, when its stream was open and it passes
        (one that opened and broke off before its end included)."""
        if self._streaming and is_transient(exc):
            self.current.upstream.failed()
            self._streaming = False

    async def fall_back(self, exc: BaseException) -> bool:
        """Before the first word: whether the chat moved to its next candidate after ``exc`` (a passing failure).
        Past the last, the next attempt starts again from the first."""
        if not is_transient(exc) or isinstance(exc, Unavailable):
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
        if not is_transient(exc) or isinstance(exc, Unavailable):
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

    def cooling(self, exc: BaseException) -> CoolingDown | None:
        """Past the last candidate after a passing failure (``move_on`` said no): when every candidate's breaker is
        open, the wait for the first probe (the route starts again from the first); else None."""
        if not is_transient(exc) or not self._all_cooling_down():
            return None
        self._at = 0
        return CoolingDown(f"every upstream of {self.model!r} failed and is cooling down", self.retry_in())

    async def wait(self, exc: Unavailable, budget_seconds: float) -> bool:
        """No candidate could take the answer (``exc``): whether it waited for the first that may, within
        ``budget_seconds`` of its first such wait (the answer's deadline: it fails past it)."""
        now = time.monotonic()
        self._waiting_since = self._waiting_since or now
        wait = max(exc.retry_in, UNAVAILABLE_POLL_SECONDS)  # a probe may be running: asked again shortly
        if now + wait - self._waiting_since > budget_seconds:
            return False
        logger.warning("%s: waiting %.1f s for an upstream of %r", exc, wait, self.model)
        await asyncio.sleep(wait)
        return True

    def _advance(self) -> bool:
        if self._at + 1 < len(self.candidates):
            self._at += 1
            return True
        return False

    def release(self) -> None:
        """Give back the place in the limit held for the last stream (at its end, or before the next)."""
        if self._streaming:  # it ended neither finished nor failed by the upstream (cancelled, refused)
            self.current.upstream.undecided()
            self._streaming = False
        if self._held is not None:
            self._held.limit.release()
            self._held.streams_changed()
            self._held = None

    def describe(self) -> str:
        return f"{self.current.model} on {self.current.upstream.name}"
