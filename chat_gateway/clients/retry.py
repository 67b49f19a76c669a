"""Every retry of the gateway: the one definition of a transient error, and the named tenacity policies.

| Policy | Retries | Until |
| --- | --- | --- |
| ``upstream`` | a stream that could not start or broke off (transient errors) | RETRY_ATTEMPTS or RETRY_MAX_SECONDS |
| ``persistence`` | one request to persistence (connection errors, 5xx, 429) | PERSISTENCE_RETRY_ATTEMPTS |
| ``turn_settle`` | storing a turn whose fate is unknown (persistence unreachable) | TURN_SETTLE_SECONDS |
| ``last_save`` | an answer's last write (persistence unreachable or behind) | RETRY_MAX_SECONDS |

Every write to persistence carries an id or an offset, so retrying one never doubles it. ``Unavailable`` (no upstream
can take a stream now) is not retried at once: the answer waits for an upstream (``Route.wait``).
"""

import email.utils
import logging
import time

import httpx
import openai
from redis.exceptions import RedisError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
    wait_fixed,
)
from tenacity.wait import wait_base

from chat_gateway.config import Settings
from chat_gateway.metrics import RETRIES, UPSTREAM_ERRORS
from shared import ServiceUnavailable

logger = logging.getLogger(__name__)

# Upstream answers worth another try besides 5xx: a timeout, a conflict, a rate limit.
TRANSIENT_STATUSES = frozenset({408, 409, 429})


class Transient(Exception):
    """An error that another try may not meet: raised where a failure is known to be passing."""


class StreamInterrupted(Transient):
    """The upstream ended the stream before the answer was finished."""


class Unavailable(Transient):
    """No upstream can take a stream now (every one cooling down after failures, or full): the answer waits for
    one (``retry_in`` seconds at least) within its deadline, rather than spending its retries at once
    (chat_gateway/answers/generation.py)."""

    def __init__(self, message: str, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in


def is_transient(exc: BaseException) -> bool:
    """Worth another try: ours, connection trouble and timeouts, 429 and 5xx; never 400/401/403/404."""
    if isinstance(exc, Transient | openai.APIConnectionError | httpx.TransportError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in TRANSIENT_STATUSES or exc.status_code >= 500
    return False


def error_kind(exc: BaseException) -> str:
    """A metric label for an upstream error."""
    if isinstance(exc, StreamInterrupted):
        return "interrupted"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 429:
            return "rate_limit"
        return "server_error" if exc.status_code >= 500 else "client_error"
    return "other"


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The upstream's Retry-After (seconds or an HTTP date), when it sent one."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    value = exc.response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class wait_retry_after(wait_base):  # noqa: N801 - named like tenacity's own waits
    """Wait what the upstream asked for (capped), else exponential backoff with jitter."""

    def __init__(self, fallback: wait_base, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        asked = retry_after_seconds(retry_state.outcome.exception() if retry_state.outcome else None)
        if asked is not None:
            return min(asked, self.cap)
        return float(self.fallback(retry_state))


def _log_upstream_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    logger.warning("upstream attempt %d failed, retrying: %r", state.attempt_number, exc)
    if exc is not None:
        RETRIES.inc()
        UPSTREAM_ERRORS.labels(error_kind(exc)).inc()


def upstream(settings: Settings) -> AsyncRetrying:
    """Starting a stream and continuing an interrupted one, as one answer's attempts."""
    backoff = wait_exponential_jitter(
        multiplier=settings.retry_initial_wait, jitter=settings.retry_initial_wait, max=settings.retry_max_wait
    )
    return AsyncRetrying(
        before_sleep=_log_upstream_retry,
        stop=stop_after_attempt(settings.retry_attempts) | stop_after_delay(settings.retry_max_seconds),
        wait=wait_retry_after(backoff, cap=settings.retry_max_wait),
        retry=retry_if_exception(lambda exc: is_transient(exc) and not isinstance(exc, Unavailable)),
        reraise=True,
    )


def persistence(attempts: int, initial_wait: float, max_wait: float) -> AsyncRetrying:
    """One request to persistence."""
    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=initial_wait, jitter=initial_wait, max=max_wait),
        retry=retry_if_exception(is_transient),
        reraise=True,
    )


def turn_settle(settings: Settings) -> AsyncRetrying:
    """Storing a turn again, with the same ids, while persistence cannot say whether it has it."""
    return AsyncRetrying(
        stop=stop_after_delay(settings.turn_settle_seconds),
        wait=wait_fixed(min(1.0, settings.turn_settle_seconds / 10)),
        retry=retry_if_exception_type(ServiceUnavailable),
        reraise=True,
    )


def last_save(settings: Settings) -> AsyncRetrying:
    """An answer's last write, tried until it reports every character saved (True) or time runs out."""
    return AsyncRetrying(
        stop=stop_after_delay(settings.retry_max_seconds),
        wait=wait_fixed(min(1.0, settings.flush_interval_seconds)),
        retry=retry_if_result(lambda saved: saved is not True),
        retry_error_callback=lambda _state: False,
    )


def answer_log(settings: Settings) -> AsyncRetrying:
    """Reading a claimed answer's logged text: its clients may have been shown text that only the log holds, so
    it is tried for a lease's time (a Redis restart, a failover) before the answer goes on without it."""
    return AsyncRetrying(
        stop=stop_after_delay(settings.lease_seconds),
        wait=wait_exponential_jitter(
            multiplier=settings.retry_initial_wait, jitter=settings.retry_initial_wait, max=1.0
        ),
        retry=retry_if_exception(lambda exc: isinstance(exc, RedisError | OSError)),
        reraise=True,
    )
