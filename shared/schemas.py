"""Pydantic bases for request and response bodies, shared by both services."""

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

MAX_JSON_DEPTH = 32


def _unpaired_surrogate(text: str) -> str | None:
    """The first surrogate code point of ``text``, if any: in a Python str one is always unpaired (JSON's
    escaped pairs decode to one character), and has no UTF-8 form, so no database driver can store it."""
    if text.isascii():
        return None
    try:
        text.encode()  # 3 to 4 times quicker than a regular expression over a long prompt
    except UnicodeEncodeError as exc:
        return text[exc.start]
    return None


def storable_text(text: str) -> str:
    """``text`` as a database can store it: surrogate pairs joined, NUL and unpaired surrogates made U+FFFD.

    For text the service did not write and must keep anyway (a model's answer); a client's input with
    such characters is refused instead (``InputModel``).
    """
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if _unpaired_surrogate(text) is not None:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


def check_storable(value: Any, depth: int = 0) -> None:
    """Reject what a database cannot store faithfully: NUL characters, unpaired surrogates, NaN/Infinity."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        if (surrogate := _unpaired_surrogate(value)) is not None:
            raise ValueError(f"text must be valid Unicode: unpaired surrogate \\u{ord(surrogate):x}")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable(key, depth + 1)
            check_storable(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            check_storable(item, depth + 1)


class ReadModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class InputModel(BaseModel):
    """A request body: unknown fields are errors, and every string and number must be storable."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        check_storable(data)
        return data


def _as_utc(value: datetime) -> datetime:
    # Older clients send naive timestamps; they have always meant UTC.
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in no year a datetime can hold
        raise ValueError("timestamp out of range once in UTC") from None


UTCDatetime = Annotated[datetime, AfterValidator(_as_utc)]
JSONObject = dict[str, Any]


class Problem(BaseModel):
    """One reason a request was invalid."""

    loc: list[str | int] = Field(description='Where: ["body", "messages", 0, "content"], ["query", "limit"]...')
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error either service answers (but the gateway's OpenAI-compatible routes, in OpenAI's shape)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    detail: str = Field(description="What went wrong, for people.")
    code: str = Field(description="What went wrong, for programs: not_found, offset_mismatch, lease_held...")
    errors: list[Problem] | None = Field(default=None, description="Every problem of an invalid request (422).")
