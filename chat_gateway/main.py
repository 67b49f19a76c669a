"""The chat gateway. Run with: uvicorn chat_gateway.main:create_app --factory --port 8100"""

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from httpx_aiohttp import AiohttpTransport

from chat_gateway import health, page
from chat_gateway.answers import log as answer_log
from chat_gateway.answers.recovery import Recovery
from chat_gateway.answers.service import Answers
from chat_gateway.auth.identity import Authenticator
from chat_gateway.chat import accounts, sessions
from chat_gateway.chat import routes as chat
from chat_gateway.clients.persistence import PersistenceClient
from chat_gateway.clients.persistence_http import PersistenceHttp
from chat_gateway.config import Settings, uvicorn_host
from chat_gateway.deps import get_caller
from chat_gateway.openai_api.catalog import ModelCatalog
from chat_gateway.openai_api.chat_completions import protocol as openai_format
from chat_gateway.openai_api.chat_completions import routes as chat_completions
from chat_gateway.openai_api.conversations import routes as conversations
from chat_gateway.openai_api.responses import routes as responses
from chat_gateway.upstreams.config import ConfigError, check
from chat_gateway.upstreams.registry import Upstreams
from shared import load_settings_or_exit, split_keys
from shared.asgi import ERROR_RESPONSES, register_error_handlers
from shared.observability import REQUEST_ID_HEADER, configure_logging, request_id
from shared.stack import freeze_startup_heap, install_middleware, rate_limiter

logger = logging.getLogger(__name__)


async def _pass_request_id(request: httpx.Request) -> None:
    """One chat can be followed across both services: persistence logs the gateway's request id."""
    if (rid := request_id.get()) is not None:
        request.headers[REQUEST_ID_HEADER] = rid


def _log_identity_mode(settings: Settings) -> None:
    if settings.chat_api_keys is not None:
        logger.warning(
            "CHAT_API_KEYS are admin keys: they may act for any user and manage user keys. CHAT_ADMIN_KEYS is "
            "their name now; give users keys of their own (chat admin keys create --user NAME)"
        )
    if settings.open_mode:
        logger.warning(
            "open mode: no CHAT_ADMIN_KEYS and no JWT_* settings, so anyone who reaches this gateway may read and "
            "change every chat. For local use only"
        )


def _persistence_client(settings: Settings, transport: httpx.AsyncBaseTransport | None) -> PersistenceClient:
    """``transport``: what the calls go through when not the network (``create_app``'s)."""
    http = PersistenceHttp(
        base_url=settings.api_base_url,
        headers={"x-api-key": split_keys(settings.api_key)[0]},
        timeout=httpx.Timeout(30.0, connect=5.0),
        # aiohttp under the httpx API: the same client code and errors, without httpcore's pool checks and
        # anyio's cancel scopes (docs/benchmarks.md).
        transport=transport or AiohttpTransport(limits=httpx.Limits(max_connections=200)),
        event_hooks={"request": [_pass_request_id]},
    )
    return PersistenceClient(
        http,
        attempts=settings.persistence_retry_attempts,
        initial_wait=settings.retry_initial_wait / 5,
        max_wait=min(2.0, settings.retry_max_wait),
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Clients built, answers recovered while serving; on the way out, running answers saved and released."""
    settings: Settings = app.state.settings
    persistence = _persistence_client(settings, app.state.persistence_transport)
    upstreams = Upstreams.build(settings)
    if not upstreams.configured:
        logger.warning("no upstream key configured: chat calls will answer 503")
    # Asked once, before anything is served: how each upstream continues an answer, which models it serves.
    await upstreams.start(settings)
    app.state.upstreams = upstreams
    log = (
        None
        if settings.answer_log_url is None
        else answer_log.connect(settings.answer_log_url.get_secret_value(), settings.answer_log_timeout_seconds)
    )
    if log is None:
        logger.info("no ANSWER_LOG_URL: text is shown once persistence holds it (a write per chunk)")
    answers = Answers(settings, persistence, upstreams, log)
    identity_provider = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0))
    app.state.auth = Authenticator.build(
        settings, persistence, rate_limiter(settings, "chat_gateway"), identity_provider
    )
    _log_identity_mode(settings)
    app.state.persistence = persistence
    app.state.answers = answers
    app.state.catalog = ModelCatalog(settings, upstreams)
    recovery = asyncio.create_task(Recovery(answers).run(), name="recovery")
    freeze_startup_heap()
    try:
        yield
    finally:
        recovery.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recovery
        await answers.shutdown(settings.shutdown_grace_seconds)
        await persistence.http.aclose()
        if log is not None:
            await log.close()
        await identity_provider.aclose()
        await upstreams.close()


def create_app(
    settings: Settings | None = None, *, persistence_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The gateway. ``persistence_transport``: what its calls to persistence go through instead of the network
    (``httpx.ASGITransport`` on a persistence app in the same process: the tests' in-process API tests)."""
    settings = settings or load_settings_or_exit(Settings)
    # Refused before anything is served: uvicorn binds only once the application is built and started.
    if (problem := settings.open_exposure(uvicorn_host(sys.argv, os.environ))) is not None:
        # Said on stderr, then exit code 3, uvicorn's start-up failure: its supervisor (--workers) stops instead
        # of starting the worker again and again.
        print(f"{Settings.service_name}: {problem}", file=sys.stderr)  # noqa: T201 - before logging is set up
        raise SystemExit(3)
    if settings.upstreams_file is not None:
        try:
            check(settings.upstreams_file)
        except ConfigError as exc:
            print(f"{Settings.service_name}: UPSTREAMS_FILE: {exc}", file=sys.stderr)  # noqa: T201 - as above
            raise SystemExit(3) from exc
    configure_logging(settings.log_level)

    app = FastAPI(
        title="Chat gateway",
        summary="Streams answers from an OpenAI-compatible server and records every one durably.",
        version="1.0.0",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings
    app.state.persistence_transport = persistence_transport
    install_middleware(
        app,
        service="chat_gateway",
        settings=settings,
        reshape_errors=openai_format.reshape_under_v1,
        counts_callers=True,
    )
    register_error_handlers(app, RequestValidationError, reshape=openai_format.reshape_under_v1)
    # Routers are matched in order, route by route: the busiest first (24 us less per call to /v1, in process).
    # Every router but health's needs a caller (routes that take CallerDep reuse the one dependency's result).
    authenticated = [Depends(get_caller)]
    app.include_router(chat_completions.router, dependencies=authenticated)
    app.include_router(responses.router, dependencies=authenticated)
    app.include_router(conversations.router, dependencies=authenticated)
    app.include_router(health.router)
    app.include_router(chat.router, dependencies=authenticated)
    app.include_router(sessions.router, dependencies=authenticated)
    app.include_router(accounts.router, dependencies=authenticated)
    app.include_router(page.router)  # the page itself is public: it asks for a key before anything else
    app.mount("/ui", page.files(), name="ui")
    return app
