"""What both services do to their app: the middleware stack, and the heap once start-up is done."""

import gc

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware

from shared.asgi import BodyLimitMiddleware, Reshape
from shared.observability import RequestMiddleware, metrics_endpoint
from shared.ratelimit import RateLimitMiddleware, shared_storage
from shared.settings import ServiceSettings


def install_middleware(
    app: Starlette, *, service: str, settings: ServiceSettings, reshape_errors: Reshape | None = None
) -> None:
    """The stack both services share, outermost first: request id and log line, CORS, rate limit, body limit.

    ``reshape_errors`` reshapes the errors the limits answer themselves, as the app's handlers do the rest.
    """
    app.add_middleware(BodyLimitMiddleware, max_body_size=settings.max_body_bytes, reshape=reshape_errors)
    if settings.rate_limit:
        store = settings.rate_limit_storage
        storage = shared_storage(store.get_secret_value(), service) if store is not None else None
        app.add_middleware(RateLimitMiddleware, limit=settings.rate_limit, reshape=reshape_errors, storage=storage)
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
