"""Rate limiting per API key (per client address without one), for Starlette apps."""

import hashlib
import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.asgi import Reshape, error_response, reshaped
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


class RateLimitMiddleware:
    """429 with Retry-After past ``limit`` (e.g. "120/minute"); X-RateLimit-* headers on every answer.

    Counts live in ``storage`` (see ``shared_storage``), shared by every worker and instance that uses it;
    without one, or while it is unreachable, in this process, where each enforces the limit on its own.
    """

    def __init__(
        self, app: ASGIApp, limit: str, reshape: Reshape | None = None, storage: RedisStorage | None = None
    ) -> None:
        self.app = app
        self.item: RateLimitItem = parse(limit)
        self.reshape = reshape
        # The asyncio flavour: the threaded one starts a new timer thread up to 100 times a second.
        self.local = FixedWindowRateLimiter(MemoryStorage())
        self.shared = FixedWindowRateLimiter(storage) if storage is not None else None
        self.shared_retry_at = 0.0

    async def _count(self, key: str) -> tuple[bool, float, int]:
        """Counts this request; returns whether it is allowed, when the window resets, and what remains."""
        if self.shared is not None and time.monotonic() >= self.shared_retry_at:
            try:
                return await _hit(self.shared, self.item, key)
            except StorageError as exc:
                # Failing open: an outage of the limiter's store must not become an outage of the service.
                self.shared_retry_at = time.monotonic() + SHARED_RETRY_SECONDS
                logger.warning(
                    "rate limit store unreachable (%s): counting in this process for %.0f s",
                    exc.storage_error,
                    SHARED_RETRY_SECONDS,
                )
        return await _hit(self.local, self.item, key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        allowed, reset_at, remaining = await self._count(_client_key(scope))
        headers = {
            "X-RateLimit-Limit": str(self.item.amount),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset_at)),
        }
        if not allowed:
            wait = max(1, math.ceil(reset_at - time.time()))
            detail = f"rate limit of {self.item} exceeded; retry in {wait} s"
            response = error_response(429, detail, "rate_limited", headers=headers | {"Retry-After": str(wait)})
            await reshaped(scope, response, self.reshape)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in headers.items():
                    response_headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _hit(limiter: FixedWindowRateLimiter, item: RateLimitItem, key: str) -> tuple[bool, float, int]:
    allowed = await limiter.hit(item, key)
    reset_at, remaining = await limiter.get_window_stats(item, key)
    return allowed, reset_at, remaining
