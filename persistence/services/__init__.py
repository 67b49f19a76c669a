"""Services: what the routes call, in a worker thread, with the request's ``Session`` (``Database.run``).

A service function takes the session and typed input, and returns the typed read model its route answers with
(from shared/ or persistence/schemas.py), ``Stored`` of one where a create may be a replay, a plain value (an
owner, a count) or None: ORM objects, Rows and dicts never leave this package. It flushes, never commits:
``Database.run`` commits the request's unit of work when the function returns.

A name with a leading underscore is its module's own. What the services share is public where it lives, and
may take and return ORM objects and dicts: one service reuses another's queries without validating a read model it
does not answer with. message_rows.py holds the messages table's shared pieces (columns, a new row, the message
as an object); the ``..._row`` functions of messages.py and sessions.py are their creates and reads, as rows.
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
