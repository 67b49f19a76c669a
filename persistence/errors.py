import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from shared.asgi import error_response, register_error_handlers

logger = logging.getLogger(__name__)


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    logger.warning("database unavailable: %s", exc.__class__.__name__)
    return error_response(503, "database unavailable, retry shortly", "unavailable", headers={"Retry-After": "1"})


def register_persistence_error_handlers(app: FastAPI) -> None:
    register_error_handlers(app, RequestValidationError)
    app.add_exception_handler(OperationalError, _database_unavailable)
