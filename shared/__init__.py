"""Code both services import: settings with Docker-secret loading, and the chat vocabulary."""

from shared.enums import CANCELLED, MessageRole, MessageStatus
from shared.errors import (
    BadRequest,
    Conflict,
    DomainError,
    ErrorCode,
    Forbidden,
    NotFound,
    OffsetMismatch,
    PreconditionFailed,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from shared.resources import MessageRead, Page, SearchHit, SessionRead
from shared.schemas import ErrorBody, InputModel, JSONObject, ReadModel, UTCDatetime, storable_text
from shared.security import key_matches, presented_key
from shared.settings import ServiceSettings, SettingsError, load_settings, load_settings_or_exit, split_keys

__all__ = [
    "CANCELLED",
    "BadRequest",
    "Conflict",
    "DomainError",
    "ErrorBody",
    "ErrorCode",
    "Forbidden",
    "InputModel",
    "JSONObject",
    "MessageRead",
    "MessageRole",
    "MessageStatus",
    "NotFound",
    "OffsetMismatch",
    "Page",
    "PreconditionFailed",
    "ReadModel",
    "SearchHit",
    "ServiceSettings",
    "ServiceUnavailable",
    "SessionRead",
    "SettingsError",
    "TooManyRequests",
    "UTCDatetime",
    "Unauthorized",
    "key_matches",
    "load_settings",
    "load_settings_or_exit",
    "presented_key",
    "split_keys",
    "storable_text",
]
