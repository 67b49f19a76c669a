"""Rate limiting per API key (per client address without one), for Starlette apps."""

import hashlib
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.asgi import Reshape, error_response, reshaped

EXEMPT_PATHS = frozenset({"/health", "/health/ready", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect"})


def _client_key(scope: Scope) -> str:
    headers = Headers(scope=scope)
    key = headers.get("x-api-key") or headers.get("authorization")
    if key:
        # Keys are counted under a digest: the limiter's memory never holds a secret.
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"


class RateLimitMiddleware:
    """429 with Retry-After past ``limit`` (e.g. "120/minute"); X-RateLimit-* headers on every answer.

    Counts live in this process: with several workers or instances each enforces the limit on its own.
    """

    def __init__(self, app: ASGIApp, limit: str, reshape: Reshape | None = None) -> None:
        self.app = app
        self.item: RateLimitItem = parse(limit)
        self.reshape = reshape
        # The asyncio flavour: the threaded one starts a new timer thread up to 100 times a second.
        self.limiter = FixedWindowRateLimiter(MemoryStorage())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        key = _client_key(scope)
        allowed = await self.limiter.hit(self.item, key)
        reset_at, remaining = await self.limiter.get_window_stats(self.item, key)
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
