"""Rate limiting for Starlette apps: per presented key (persistence), or per identity once known (the gateway)."""

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.asgi import Reshape, error_response, reshaped
from shared.errors import ErrorCode
from shared.security import presented_key

logger = logging.getLogger(__name__)

EXEMPT_PATHS = frozenset({"/health", "/health/ready", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect"})


def _client_key(scope: Scope) -> str:
    if key := presented_key(Headers(scope=scope)):
        # Keys are counted under a digest: the limiter's memory never holds a secret.
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"


# While the shared store is unreachable, counts are kept in the process, and the store is tried again this
# often: a store that times out would otherwise slow every request by its timeout.
SHARED_RETRY_SECONDS = 5.0
SHARED_TIMEOUT_SECONDS = 0.5


def shared_storage(url: str, namespace: str) -> RedisStorage:
    """Counts in Redis (``redis://``, ``rediss://`` or ``redis+unix://``), under keys of their own."""
    return RedisStorage(
        f"async+{url}",
        implementation="redispy",
        wrap_exceptions=True,
        key_prefix=f"ratelimit:{namespace}",
        socket_timeout=SHARED_TIMEOUT_SECONDS,
        socket_connect_timeout=SHARED_TIMEOUT_SECONDS,
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """One request counted: whether it may go on, and the X-RateLimit-* headers that say where its caller is."""

    item: RateLimitItem
    allowed: bool
    reset_at: float
    remaining: int

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))

    @property
    def detail(self) -> str:
        return f"rate limit of {self.item} exceeded; retry in {self.retry_after} s"

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.item.amount),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }


class RateLimiter:
    """Fixed windows per identity, in ``storage`` (see ``shared_storage``), shared by every worker and instance
    that uses it; without one, or while it is unreachable, in this process, where each enforces it on its own."""

    def __init__(self, storage: RedisStorage | None = None) -> None:
        # The asyncio flavour: the threaded one starts a new timer thread up to 100 times a second.
        self.local = FixedWindowRateLimiter(MemoryStorage())
        self.shared = FixedWindowRateLimiter(storage) if storage is not None else None
        self.shared_retry_at = 0.0

    async def hit(self, item: RateLimitItem, identity: str) -> Verdict:
        """Count one request of ``identity`` (never a secret: a digest of a key, a user id, an address)."""
        if self.shared is not None and time.monotonic() >= self.shared_retry_at:
            try:
                return await _hit(self.shared, item, identity)
            except StorageError as exc:
                # Failing open: an outage of the limiter's store must not become an outage of the service.
                self.shared_retry_at = time.monotonic() + SHARED_RETRY_SECONDS
                logger.warning(
                    "rate limit store unreachable (%s): counting in this process for %.0f s",
                    exc.storage_error,
                    SHARED_RETRY_SECONDS,
                )
        return await _hit(self.local, item, identity)


class RateLimitMiddleware:
    """429 with Retry-After past ``limit`` (e.g. "120/minute") per presented key (per address without one);
    X-RateLimit-* headers on every answer. For a service whose callers are its peers: the gateway counts its
    callers once it knows who they are (``RateLimitHeaders``)."""

    def __init__(
        self, app: ASGIApp, limit: str, reshape: Reshape | None = None, limiter: RateLimiter | None = None
    ) -> None:
        self.app = app
        self.item: RateLimitItem = parse(limit)
        self.reshape = reshape
        self.limiter = limiter or RateLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        verdict = await self.limiter.hit(self.item, _client_key(scope))
        if not verdict.allowed:
            headers = verdict.headers() | {"Retry-After": str(verdict.retry_after)}
            response = error_response(429, verdict.detail, ErrorCode.RATE_LIMITED, headers=headers)
            await reshaped(scope, response, self.reshape)(scope, receive, send)
            return
        scope.setdefault("state", {})[HEADERS_STATE] = verdict.headers()
        await RateLimitHeaders(self.app)(scope, receive, send)


HEADERS_STATE = "rate_limit_headers"


class RateLimitHeaders:
    """Adds the X-RateLimit-* headers of the request's verdict (``request.state.rate_limit_headers``, set by
    whatever counted it) to its answer, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and (headers := state.get(HEADERS_STATE)):
                response_headers = MutableHeaders(scope=message)
                for name, value in headers.items():
                    if name not in response_headers:
                        response_headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _hit(limiter: FixedWindowRateLimiter, item: RateLimitItem, key: str) -> Verdict:
    allowed = await limiter.hit(item, key)
    reset_at, remaining = await limiter.get_window_stats(item, key)
    return Verdict(item, allowed, reset_at, remaining)
