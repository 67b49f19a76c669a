"""The one error shape of both services, for Starlette apps: {"detail": str, "code": str, ...context}.

Framework glue only at the Starlette level, so shared/ stays free of FastAPI.
"""

import logging
from collections.abc import Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import DomainError, ErrorCode
from shared.schemas import ErrorBody

logger = logging.getLogger(__name__)

_HTTP_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    431: ErrorCode.HEADERS_TOO_LARGE,
}

# A request's headers, names and values together, in bytes: more is refused (431) before any other work. A
# bearer JWT (at most 8 KiB, chat_gateway/auth/jwt.py) and every usual header fit in it several times over.
MAX_HEADER_BYTES = 32 * 1024


# For the OpenAPI document (FastAPI's ``responses``): without it every route would claim FastAPI's own 422 shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "Refused: `code` says why, any other fields say more."},
    "5XX": {"model": ErrorBody, "description": "Unavailable (503: retry) or failed."},
}


Reshape = Callable[[Scope, JSONResponse], Response]
"""Turns an error in the one shape into the shape a path's clients expect (the gateway's /v1: OpenAI's)."""


def error_response(
    status_code: int, detail: str, code: ErrorCode, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code, **extra}, status_code=status_code, headers=headers)


def reshaped(scope: Scope, response: JSONResponse, reshape: Reshape | None) -> Response:
    """An error a middleware answers itself, before the app's exception handlers could shape it."""
    return reshape(scope, response) if reshape is not None else response


def _domain_error(exc: Exception, _request: Request) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return error_response(exc.status_code, exc.detail, exc.code, headers=exc.headers, **exc.extra)


def _validation_error(exc: Exception, _request: Request) -> JSONResponse:
    # Only location, message and type: echoing the input could return megabytes or secrets.
    errors = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "")}
        for error in exc.errors()  # type: ignore[attr-defined]
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    detail = f"{where}: {first['msg']}" if where else str(first["msg"])
    return error_response(422, detail, ErrorCode.INVALID_REQUEST, errors=errors)


def _http_error(exc: Exception, request: Request) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.HTTP_ERROR)
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return error_response(exc.status_code, str(exc.detail), code, headers=headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method the path takes. Starlette's 405 names those of the first route whose path matched, so
    ``PUT /sessions`` said ``Allow: POST`` while GET is there too (RFC 9110 asks for them all). Each method is
    tried on a fresh scope: the request's own carries what routing left in it."""

    path, root_path = request.scope["path"], request.scope.get("root_path", "")

    def takes(method: str) -> bool:
        scope = {"type": "http", "path": path, "root_path": root_path, "method": method, "headers": []}
        return any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes)

    return ", ".join(method for method in _METHODS if takes(method))


def _unexpected(exc: Exception, _request: Request) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal error", ErrorCode.INTERNAL_ERROR)


def register_error_handlers(app: Starlette, validation_error: type[Exception], reshape: Reshape | None = None) -> None:
    """Render every error in the one shape; ``validation_error`` is the framework's (it has ``.errors()``).

    ``reshape`` turns it into the shape a path's clients expect (the gateway's /v1: OpenAI's), for every error
    the app answers, as the middleware's ``reshape_errors`` does for the errors they answer themselves.
    """
    renderers: dict[type[Exception], Callable[[Exception, Request], JSONResponse]] = {
        DomainError: _domain_error,
        validation_error: _validation_error,
        HTTPException: _http_error,
        Exception: _unexpected,
    }
    for exc_class, render in renderers.items():

        async def handler(
            request: Request, exc: Exception, render: Callable[[Exception, Request], JSONResponse] = render
        ) -> Response:
            return reshaped(request.scope, render(exc, request), reshape)

        app.add_exception_handler(exc_class, handler)


class BodyLimitMiddleware:
    """413 for oversize bodies, in the one error shape.

    Starlette's limit (used for bodies sent without a Content-Length) raises an HTTPException that the
    handler above renders; but for a declared Content-Length it answers in plain text, so that is caught here.
    """

    def __init__(self, app: ASGIApp, max_body_size: int, reshape: Reshape | None = None) -> None:
        self.app = RequestBodyLimitMiddleware(app, max_body_size)
        self.max_body_size = max_body_size
        self.reshape = reshape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_size:
                detail = f"request body is larger than {self.max_body_size} bytes"
                response = reshaped(scope, error_response(413, detail, ErrorCode.TOO_LARGE), self.reshape)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class HeaderLimitMiddleware:
    """431 for a request whose headers add up to more than ``max_bytes``, before anything reads them.

    The server has already received and parsed them: ``shared.server.HttpToolsProtocol`` bounds that work, as
    uvicorn's h11 (``--h11-max-incomplete-event-size``) does; this is the exact limit, whatever the server.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_HEADER_BYTES, reshape: Reshape | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.reshape = reshape

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and sum(len(name) + len(value) for name, value in scope["headers"]) > self.max_bytes:
            detail = f"request headers are larger than {self.max_bytes} bytes in all"
            response = reshaped(scope, error_response(431, detail, ErrorCode.HEADERS_TOO_LARGE), self.reshape)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
