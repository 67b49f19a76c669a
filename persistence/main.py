"""The persistence service. Run with: uvicorn persistence.main:create_app --factory --port 8000"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from persistence.api import health, identity, legacy, messages, rag, search, sessions
from persistence.config import Settings
from persistence.db import Database, create_db_engine, migrate
from persistence.deps import ApiKeyDep, BearerDocDep
from persistence.errors import register_persistence_error_handlers
from shared import load_settings_or_exit
from shared.asgi import ERROR_RESPONSES
from shared.observability import configure_logging
from shared.stack import freeze_startup_heap, install_middleware

logger = logging.getLogger(__name__)


def _log_wait(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    logger.warning("database still unreachable (attempt %d): %s", state.attempt_number, getattr(exc, "orig", exc))


async def _migrate_when_reachable(app: FastAPI, engine: Engine) -> None:
    """Apply the migrations once the database answers, trying again with a growing wait (at most 10 s)."""
    async for attempt in AsyncRetrying(
        wait=wait_exponential(multiplier=0.5, max=10),
        retry=retry_if_exception_type(OperationalError),
        before_sleep=_log_wait,
    ):
        with attempt:
            await run_in_threadpool(migrate, engine)
    app.state.database_ready = True
    logger.info("database reachable: migrations applied, ready")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings_or_exit(Settings)
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_db_engine(settings.sqlalchemy_url, pool_size=settings.db_pool_size)
        where = engine.url.render_as_string(hide_password=True)
        app.state.engine = engine
        app.state.database = database = Database(engine, threads=settings.db_pool_size)
        app.state.database_ready = not settings.migrate_on_start
        waiting: asyncio.Task[None] | None = None
        if settings.migrate_on_start:
            try:
                await run_in_threadpool(migrate, engine)
                app.state.database_ready = True
            except OperationalError as exc:
                # Started before its database (a container beside it, a restart): serve, not ready, and wait for it.
                logger.warning("database unreachable at start-up (%s): %s; waiting for it", where, exc.orig)
                waiting = asyncio.create_task(_migrate_when_reachable(app, engine), name="migrate")
        logger.info("persistence serving, database %s", where)
        freeze_startup_heap()
        try:
            yield
        finally:
            if waiting is not None:
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
            database.close()
            engine.dispose()

    app = FastAPI(
        title="Chat persistence",
        summary="Chat sessions, messages and the life of every answer.",
        version="1.0.0",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings
    install_middleware(app, service="persistence", settings=settings)
    register_persistence_error_handlers(app)
    # Routers are matched in order, route by route: the busiest first.
    for router in (messages.router, sessions.router, legacy.router, search.router, rag.router, identity.router):
        app.include_router(router, dependencies=[ApiKeyDep, BearerDocDep])
    app.include_router(health.router)
    return app
