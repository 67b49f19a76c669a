"""What both services do to their app: the middleware stack, and the heap once start-up is done."""

import gc

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware

from shared.asgi import BodyLimitMiddleware, HeaderLimitMiddleware, Reshape
from shared.observability import RequestMiddleware, metrics_endpoint
from shared.ratelimit import RateLimiter, RateLimitHeaders, RateLimitMiddleware, shared_storage
from shared.settings import ServiceSettings


def rate_limiter(settings: ServiceSettings, service: str) -> RateLimiter:
    """Counts in RATE_LIMIT_STORAGE when it is set (under the service's own keys), else in the process."""
    store = settings.rate_limit_storage
    return RateLimiter(shared_storage(store.get_secret_value(), service) if store is not None else None)


def install_middleware(
    app: Starlette,
    *,
    service: str,
    settings: ServiceSettings,
    reshape_errors: Reshape | None = None,
    counts_callers: bool = False,
) -> None:
    """The stack both services share, outermost first: request id and log line, header limit, CORS, rate limit,
    body limit.

    ``reshape_errors`` reshapes the errors the limits answer themselves, as the app's handlers do the rest.
    ``counts_callers``: the app counts each request against its caller's limit once it knows who calls (the
    middleware only adds the headers); else RATE_LIMIT applies per presented key.
    """
    app.add_middleware(BodyLimitMiddleware, max_body_size=settings.max_body_bytes, reshape=reshape_errors)
    if counts_callers:
        app.add_middleware(RateLimitHeaders)
    elif settings.rate_limit:
        limiter = rate_limiter(settings, service)
        app.add_middleware(RateLimitMiddleware, limit=settings.rate_limit, reshape=reshape_errors, limiter=limiter)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=[
                "ETag",
                "Retry-After",
                "X-Request-ID",
                "X-RateLimit-Limit",
                "X-RateLimit-Remaining",
                "X-RateLimit-Reset",
            ],
        )
    app.add_middleware(HeaderLimitMiddleware, reshape=reshape_errors)
    app.add_middleware(RequestMiddleware, service=service)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)


def freeze_startup_heap() -> None:
    """Keep what start-up built out of every later full collection; call at the end of start-up.

    Those objects live as long as the process, yet each full collection scanned them all: about 90 ms of
    CPU, and as long a pause for every request in flight (docs/benchmarks.md). Garbage is collected first:
    frozen, it would never be freed.
    """
    gc.collect()
    gc.freeze()
