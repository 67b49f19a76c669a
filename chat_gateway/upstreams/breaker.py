"""A circuit breaker per upstream: one that keeps failing is skipped for a cool-down, then tried by one request.

| State | Event | Next state |
| --- | --- | --- |
| ``closed`` | a failure, the ``threshold``-th in a row | ``open`` |
| ``closed`` | a success | ``closed`` (the count starts again) |
| ``open`` | a request once the cool-down has passed | ``half_open``: that request is the probe |
| ``half_open`` | the probe succeeds | ``closed`` |
| ``half_open`` | the probe fails | ``open``, for another cool-down |
| ``half_open`` | the probe ends undecided (its answer cancelled) | ``open``, its cool-down over: the next probes |

A success is a stream that finished, a failure one that could not open or broke off before its end (route.py):
an upstream whose every stream opens and then dies is failing, however fast it opens them.

Skipped: every request while ``open`` (cool-down running), and every one but the probe while ``half_open``.

Written here rather than taken from a library: purgatory (asyncio) lets every request through while half-open,
not one probe, and its state object keeps an event per failure unless driven through its message bus (several
awaits per request); pybreaker and circuitbreaker wrap calls synchronously. The machine is the table above.
"""

import enum
import time
from collections.abc import Callable


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    def __init__(
        self, threshold: int | None, cooldown_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.cooldown_seconds = cooldown_seconds
        self.state = BreakerState.CLOSED
        self.failures = 0  # in a row
        self._opened_at = 0.0
        self._clock = clock

    def _to(self, state: BreakerState) -> None:
        """The one transition (the table in the module's docstring)."""
        self.state = state
        if state == BreakerState.OPEN:
            self._opened_at = self._clock()
        if state == BreakerState.CLOSED:
            self.failures = 0

    def allow(self) -> bool:
        """Whether a request may go to the upstream now; the first after the cool-down becomes the probe."""
        if self.state == BreakerState.CLOSED:
            return True
        if self.state == BreakerState.OPEN and self.retry_in() == 0:
            self._to(BreakerState.HALF_OPEN)
            return True
        return False

    def skips(self) -> bool:
        """Whether ``allow`` would say no, without becoming half-open."""
        return self.state == BreakerState.HALF_OPEN or self.retry_in() > 0

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0: now, or not open)."""
        if self.state != BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown_seconds - self._clock())

    def succeeded(self) -> None:
        if self.state != BreakerState.CLOSED or self.failures:
            self._to(BreakerState.CLOSED)

    def undecided(self) -> None:
        """The probe's stream ended neither finished nor failed by the upstream: another request probes at once."""
        if self.state == BreakerState.HALF_OPEN:
            self._to(BreakerState.OPEN)
            self._opened_at -= self.cooldown_seconds

    def failed(self) -> None:
        self.failures += 1
        if self.state == BreakerState.HALF_OPEN or (
            self.state == BreakerState.CLOSED and self.threshold is not None and self.failures >= self.threshold
        ):
            self._to(BreakerState.OPEN)
