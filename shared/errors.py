"""Domain errors: each carries its HTTP status and a code from ``ErrorCode``, so services never import the web
framework and programs on either side of the wire match codes, not strings."""

import enum
from collections.abc import Mapping
from typing import Any


class ErrorCode(enum.StrEnum):
    """Every ``code`` either service answers with (the ``code`` of the one error shape)."""

    # Requests
    BAD_REQUEST = "bad_request"
    INVALID_REQUEST = "invalid_request"
    INVALID_VALUE = "invalid_value"
    INVALID_QUERY = "invalid_query"
    TOO_LARGE = "too_large"
    HEADERS_TOO_LARGE = "headers_too_large"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNSUPPORTED = "unsupported"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    HTTP_ERROR = "http_error"
    # Who calls
    UNAUTHORIZED = "unauthorized"
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - a code, not a secret
    INVALID_USER_KEY = "invalid_user_key"
    KEY_EXPIRED = "key_expired"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    BUDGET_EXCEEDED = "budget_exceeded"
    # What is stored
    NOT_FOUND = "not_found"
    NO_MESSAGE = "no_message"
    CONFLICT = "conflict"
    ID_CONFLICT = "id_conflict"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    RETRY = "retry"
    PRECONDITION_FAILED = "precondition_failed"
    OFFSET_MISMATCH = "offset_mismatch"
    ILLEGAL_TRANSITION = "illegal_transition"
    LEASE_HELD = "lease_held"
    LEASE_LOST = "lease_lost"
    IN_PROGRESS = "in_progress"
    NOTHING_TO_RESUME = "nothing_to_resume"
    # Availability and answers
    UNAVAILABLE = "unavailable"
    NOT_READY = "not_ready"
    SCHEMA_BEHIND = "schema_behind"
    SHUTTING_DOWN = "shutting_down"
    NO_UPSTREAM = "no_upstream"
    MODEL_NOT_FOUND = "model_not_found"  # OpenAI's code for it
    UPSTREAM_BUSY = "upstream_busy"
    UPSTREAM_COOLING_DOWN = "upstream_cooling_down"
    PERSISTENCE_UNAVAILABLE = "persistence_unavailable"
    PERSISTENCE_ERROR = "persistence_error"
    OUTCOME_UNKNOWN = "outcome_unknown"
    JWKS_UNAVAILABLE = "jwks_unavailable"
    ANSWER_FAILED = "answer_failed"
    INTERNAL_ERROR = "internal_error"

    @classmethod
    def parse(cls, value: object) -> "ErrorCode | None":
        """The code a peer sent, when it is one of ours."""
        try:
            return cls(value) if isinstance(value, str) else None
        except ValueError:
            return None


class DomainError(Exception):
    status_code = 400
    code: ErrorCode = ErrorCode.BAD_REQUEST

    def __init__(
        self, detail: str, *, code: ErrorCode | None = None, headers: Mapping[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code  # a finer-grained reason than the class gives, e.g. OFFSET_MISMATCH
        self.headers = dict(headers or {})  # sent with the error (Retry-After...), not in its body
        self.extra = extra


class BadRequest(DomainError):
    pass


class Unauthorized(DomainError):
    status_code = 401
    code = ErrorCode.UNAUTHORIZED


class Forbidden(DomainError):
    status_code = 403
    code = ErrorCode.FORBIDDEN


class NotFound(DomainError):
    status_code = 404
    code = ErrorCode.NOT_FOUND


class Conflict(DomainError):
    status_code = 409
    code = ErrorCode.CONFLICT


class PreconditionFailed(DomainError):
    status_code = 412
    code = ErrorCode.PRECONDITION_FAILED


class TooManyRequests(DomainError):
    status_code = 429
    code = ErrorCode.RATE_LIMITED


class ServiceUnavailable(DomainError):
    status_code = 503
    code = ErrorCode.UNAVAILABLE


class OffsetMismatch(Conflict):
    """An append (or a read) at an offset that is not the answer's length: ``length`` is the stored one."""

    code = ErrorCode.OFFSET_MISMATCH

    def __init__(self, detail: str, *, length: int, **extra: Any) -> None:
        super().__init__(detail, length=length, **extra)
        self.length = length
