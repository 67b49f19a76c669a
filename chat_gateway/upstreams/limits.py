"""An upstream's concurrency limit: streams at once, a bounded queue of requests waiting for one, a bounded wait."""

import asyncio

from chat_gateway.clients.retry import Transient
from shared import ErrorCode, TooManyRequests


class LimitReached(Transient):
    """No place came free in time: the chat goes to its next upstream, or is tried again (``retry.upstream``)."""


class Limit:
    """At most ``streams`` at once (None: no limit); ``queue`` more wait up to ``wait_seconds`` for a place.

    Past both, a chat is refused before anything is stored (``refusal``: 429, the wait as Retry-After); one
    already under way (admitted, taken over) meets ``LimitReached``.
    """

    def __init__(self, name: str, streams: int | None, queue: int, wait_seconds: float) -> None:
        self.name = name
        self.streams = streams
        self.queue = queue
        self.wait_seconds = wait_seconds
        self.in_use = 0  # streams open, or about to be
        self.waiting = 0
        self._places = asyncio.Semaphore(streams or 1)

    def has_room(self) -> bool:
        """Whether a request would get a stream, or a place in the queue."""
        return self.streams is None or self.in_use + self.waiting < self.streams + self.queue

    def refusal(self) -> TooManyRequests:
        retry_after = max(1, round(self.wait_seconds))
        return TooManyRequests(
            f"the upstream {self.name!r} is at its concurrency limit ({self.streams} streams); retry in "
            f"{retry_after} s",
            code=ErrorCode.UPSTREAM_BUSY,
            headers={"Retry-After": str(retry_after)},
        )

    async def acquire(self) -> None:
        """A place for one stream, waited for in the queue; ``release`` gives it back."""
        if self.streams is None:
            return
        if not self._places.locked():
            await self._places.acquire()  # at once: no await happens
        elif not self.has_room():
            raise LimitReached(f"the upstream {self.name!r} is at its concurrency limit, its queue full")
        else:
            self.waiting += 1
            try:
                async with asyncio.timeout(self.wait_seconds):  # not wait_for: on 3.11 it can swallow a cancel
                    await self._places.acquire()
            except TimeoutError:
                raise LimitReached(f"no place at the upstream {self.name!r} within {self.wait_seconds:g} s") from None
            finally:
                self.waiting -= 1
        self.in_use += 1

    def release(self) -> None:
        if self.streams is None:
            return
        self.in_use -= 1
        self._places.release()
