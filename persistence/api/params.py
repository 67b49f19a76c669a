"""Query parameters shared by the list routes, and responses documented alike on several routes."""

from typing import Annotated, Any

from fastapi import Query
from pydantic import AfterValidator

from shared import BadRequest

NO_NUL = r"^[^\x00]*$"

Limit = Annotated[int, Query(ge=1, le=200, description="Page size (at most 200).")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, pattern=r"^[A-Za-z0-9_-]*$", description="`next_cursor` of the previous page."),
    AfterValidator(lambda cursor: cursor or None),  # `?cursor=` is the first page, as no cursor is
]


def replayed(model: type) -> dict[str, Any]:
    """A create's 200: the same request again (same id, same values) returns what was stored, created nothing."""
    return {"model": model, "description": "A replay: what the first request stored."}


def favorite_value(query: bool | None, body: bool | None) -> bool | None:
    """The favorite flag to set, given in the query or the body (None: toggle it); two that differ are a 400."""
    if query is not None and body is not None and query != body:
        raise BadRequest("is_favorite is given twice, with two values: give it once")
    return body if body is not None else query
