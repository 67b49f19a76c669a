"""Services: what the routes call, in a worker thread, with the request's ``Session`` (``Database.run``).

A service function takes the session and typed input, and returns the typed read model its route answers with
(from shared/ or persistence/schemas.py), ``Stored`` of one where a create may be a replay, a plain value (an
owner, a count) or None: ORM objects, Rows and dicts never leave this package. It flushes, never commits:
``Database.run`` commits the request's unit of work when the function returns.

Names with a leading underscore are the package's own, shared by its modules, and may take and return ORM
objects and dicts: one service reuses another's queries without validating a read model it does not answer with.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class Stored(Generic[T]):
    """What a create stored, and whether this request created it (False: a replay, which is a 200, not a 201)."""

    item: T
    created: bool

    def map(self, read: Callable[[T], U]) -> "Stored[U]":
        return Stored(read(self.item), self.created)
