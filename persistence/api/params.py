"""Query parameters shared by the list routes."""

from typing import Annotated

from fastapi import Query

NO_NUL = r"^[^\x00]*$"

Limit = Annotated[int, Query(ge=1, le=200, description="Page size (at most 200).")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, pattern=r"^[A-Za-z0-9_-]*$", description="`next_cursor` of the previous page."),
]
