from starlette.datastructures import Headers
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from persistence.errors import error_response


class BodyLimitMiddleware:
    """413 for oversize bodies, in the API's JSON error shape.

    Starlette's limit (used for bodies sent without a Content-Length) raises an HTTPException that our
    handler renders; but for a declared Content-Length it answers in plain text, so that case is caught here.
    """

    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = RequestBodyLimitMiddleware(app, max_body_size)
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_size:
                detail = f"request body is larger than {self.max_body_size} bytes"
                await error_response(413, detail, "too_large")(scope, receive, send)
                return
        await self.app(scope, receive, send)
