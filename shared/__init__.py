"""Code both services import: settings with Docker-secret loading, and the chat vocabulary."""

from shared.enums import MessageRole, MessageStatus
from shared.errors import (
    BadRequest,
    Conflict,
    DomainError,
    NotFound,
    PreconditionFailed,
    ServiceUnavailable,
    Unauthorized,
)
from shared.schemas import ErrorBody, InputModel, JSONObject, ReadModel, UTCDatetime, storable_text
from shared.security import key_matches
from shared.settings import ServiceSettings, SettingsError, load_settings, load_settings_or_exit, split_keys

__all__ = [
    "BadRequest",
    "Conflict",
    "DomainError",
    "ErrorBody",
    "InputModel",
    "JSONObject",
    "MessageRole",
    "MessageStatus",
    "NotFound",
    "PreconditionFailed",
    "ReadModel",
    "ServiceSettings",
    "ServiceUnavailable",
    "SettingsError",
    "UTCDatetime",
    "Unauthorized",
    "key_matches",
    "load_settings",
    "load_settings_or_exit",
    "split_keys",
    "storable_text",
]
