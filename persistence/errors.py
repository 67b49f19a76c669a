import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from shared import ErrorCode
from shared.asgi import error_response, register_error_handlers

logger = logging.getLogger(__name__)

# A table or column this code uses is missing: PostgreSQL's undefined_table and undefined_column, SQLite's
# messages (an OperationalError there, which would otherwise read as "unavailable" and be retried forever).
_MISSING_SQLSTATES = frozenset({"42P01", "42703"})
_SQLITE_MISSING = re.compile(r"no such (table|column)|table \S+ has no column named")
SCHEMA_BEHIND = (
    "the database schema is older than this version of the service: apply the migrations "
    "(make migrate, or start with MIGRATE_ON_START=true)"
)


def _schema_behind(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _MISSING_SQLSTATES or _SQLITE_MISSING.match(str(exc.orig)) is not None


def _schema_behind_response(exc: DBAPIError) -> JSONResponse:
    logger.error("database schema behind the code: %s", exc.orig)
    return error_response(500, SCHEMA_BEHIND, ErrorCode.SCHEMA_BEHIND)


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OperationalError)
    if _schema_behind(exc):
        return _schema_behind_response(exc)
    logger.warning("database unavailable: %s: %s", exc.__class__.__name__, exc.orig)
    return error_response(
        503, "database unavailable, retry shortly", ErrorCode.UNAVAILABLE, headers={"Retry-After": "1"}
    )


async def _database_misused(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProgrammingError)
    if _schema_behind(exc):
        return _schema_behind_response(exc)
    raise exc  # a bug: the catch-all handler answers 500 and logs it


def register_persistence_error_handlers(app: FastAPI) -> None:
    register_error_handlers(app, RequestValidationError)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(ProgrammingError, _database_misused)
