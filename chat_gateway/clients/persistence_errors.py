"""What persistence's replies mean to the gateway: a wait worth another try (``PersistenceBusy``), a refusal for
good (``PersistenceError``), and its refusals as the gateway's own errors (``raise_for``)."""

from typing import Any

import httpx

from chat_gateway.clients.retry import Transient
from shared import Conflict, DomainError, ErrorCode, NotFound, OffsetMismatch, PreconditionFailed


class PersistenceBusy(Transient):
    """A 5xx or 429 from persistence: worth another try."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"persistence answered {response.status_code}")
        self.response = response


class PersistenceError(DomainError):
    """Persistence refused a request for good: a 4xx that no retry changes."""

    status_code = 502
    code = ErrorCode.PERSISTENCE_ERROR


# Persistence found a value invalid: when the gateway relays a client's values, the client's to fix.
_INVALID_VALUE = frozenset({400, 413, 422})


def raise_for(response: httpx.Response) -> None:
    if response.is_success or response.status_code == 304:  # a 304 answers only a request that asked for it
        return
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        body = {}
    detail = str(body.pop("detail", response.text[:200]))
    code = ErrorCode.parse(body.pop("code", None))
    if code == ErrorCode.OFFSET_MISMATCH and isinstance(length := body.pop("length", None), int):
        raise OffsetMismatch(detail, length=length, **body)
    if response.status_code == 404:
        raise NotFound(detail, code=code, **body)
    if response.status_code == 409:
        raise Conflict(detail, code=code, **body)
    if response.status_code == 412:
        raise PreconditionFailed(detail, code=code, **body)
    error = PersistenceError(
        f"persistence rejected a request: {detail}", persistence_status=response.status_code, persistence_code=code
    )
    if response.status_code in _INVALID_VALUE:  # a 4xx, not a 502 for a bad gateway
        error.status_code, error.code = response.status_code, code or error.code
    raise error
