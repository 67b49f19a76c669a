"""The persistence service. Run with: uvicorn persistence.main:create_app --factory --port 8000"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from persistence.api import health, legacy, messages, rag, search, sessions
from persistence.config import Settings
from persistence.db import Database, create_db_engine, migrate
from persistence.deps import ApiKeyDep, BearerDocDep
from persistence.errors import register_persistence_error_handlers
from shared import load_settings_or_exit
from shared.asgi import ERROR_RESPONSES
from shared.observability import configure_logging
from shared.stack import freeze_startup_heap, install_middleware

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings_or_exit(Settings)
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_db_engine(settings.sqlalchemy_url, pool_size=settings.db_pool_size)
        if settings.migrate_on_start:
            await run_in_threadpool(migrate, engine)
        app.state.engine = engine
        app.state.database = database = Database(engine, threads=settings.db_pool_size)
        logger.info("persistence ready on %s", engine.url.render_as_string(hide_password=True))
        freeze_startup_heap()
        try:
            yield
        finally:
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
    for router in (messages.router, sessions.router, legacy.router, search.router, rag.router):
        app.include_router(router, dependencies=[ApiKeyDep, BearerDocDep])
    app.include_router(health.router)
    return app
