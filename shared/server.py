"""uvicorn's httptools protocol with a bound on a request's head while it is still arriving.

uvicorn bounds a request's head only under h11 (``--h11-max-incomplete-event-size``); under httptools, its
default, a 50 MB header was read and parsed whole (about 5 s, /health held up for a second) before the app could
refuse it. Both services are run with ``--http shared.server:HttpToolsProtocol`` (Procfile, Dockerfiles).
"""

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpToolsProtocol

from shared.asgi import MAX_HEADER_BYTES
from shared.errors import ErrorCode

# The request line and headers, as received: room for a long URL beside headers at their limit (MAX_HEADER_BYTES,
# which the app checks exactly: HeaderLimitMiddleware).
MAX_HEAD_BYTES = 2 * MAX_HEADER_BYTES

_REFUSAL = json.dumps(
    {"detail": f"request line and headers are larger than {MAX_HEAD_BYTES} bytes", "code": ErrorCode.HEADERS_TOO_LARGE}
).encode()


class HttpToolsProtocol(_HttpToolsProtocol):
    """Answers 431 and closes the connection once a request's head passes MAX_HEAD_BYTES unfinished.

    Counted from the bytes received while a head is incomplete: the chunk a request begins in is not counted, so
    at most one read (a few hundred KiB) more is parsed, a bounded cost.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_header(self, name: bytes, value: bytes) -> None:
        # A header after the head is a chunked body's trailer: uvicorn would add it to a request the app is already
        # serving, unbounded. None is served here.
        if not self._in_head:
            self._refuse_head()
            return
        super().on_header(name, value)

    def _refuse_head(self) -> None:
        if self.transport.is_closing():
            return
        self.logger.warning("Request head larger than %d bytes refused.", MAX_HEAD_BYTES)
        content = [STATUS_LINE[431]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(_REFUSAL)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                _REFUSAL,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
