"""Opaque keyset cursors: the sort key of the last row of a page, so the next page is one index seek."""

import base64
import json
import uuid
from datetime import datetime
from typing import Any, TypeVar

from shared import BadRequest, Page

PageT = TypeVar("PageT", bound=Page[Any])


def encode_cursor(*key: bool | int | datetime | uuid.UUID) -> str:
    parts = [k.isoformat() if isinstance(k, datetime) else str(k) if isinstance(k, uuid.UUID) else k for k in key]
    return base64.urlsafe_b64encode(json.dumps(parts, separators=(",", ":")).encode()).decode().rstrip("=")


def keyset_page(page: type[PageT], rows: list[dict[str, Any]], limit: int, *key: str) -> PageT:
    """The first ``limit`` of ``rows`` (read with one more, to tell whether a next page exists) as a ``page``,
    validated once, with the cursor after the last of them from its columns ``key`` (None on the last page)."""
    if len(rows) <= limit:
        return page(items=rows, next_cursor=None)
    return page(items=rows[:limit], next_cursor=encode_cursor(*(rows[limit - 1][column] for column in key)))


def decode_cursor(cursor: str, *types: type) -> tuple[bool | int | datetime | uuid.UUID, ...]:
    """Decode a cursor made by encode_cursor with values of ``types``; anything else is a 400."""
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(parts, list) or len(parts) != len(types):
            raise ValueError("wrong shape")
        return tuple(_parse(kind, part) for kind, part in zip(types, parts, strict=True))
    except (ValueError, TypeError) as exc:  # binascii.Error and JSONDecodeError are ValueErrors
        raise BadRequest("invalid cursor: pass back a next_cursor exactly as it was returned") from exc


def _parse(kind: type, part: object) -> bool | int | datetime | uuid.UUID:
    if kind is bool and isinstance(part, bool):
        return part
    if kind is int and isinstance(part, int) and not isinstance(part, bool) and 0 <= part <= 10_000:
        return part
    if kind is datetime and isinstance(part, str):
        value = datetime.fromisoformat(part)
        if value.tzinfo is None:
            raise ValueError("naive timestamp")
        return value
    if kind is uuid.UUID and isinstance(part, str):
        return uuid.UUID(part)
    raise ValueError(f"expected {kind.__name__}")
