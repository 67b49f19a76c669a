"""The messages table below the read models, as the services that read and write it share it: its columns and
their order, a new row's values, a replay told apart, and the message itself as an ORM object (read, last,
locked, changed). Every query on the messages table lives in the services that use these: messages.py (its
CRUD), turns.py and turn_statements.py (a question and its answer stored together), answers.py (the life of an
answer), conversations.py, and the two APIs kept for older clients (legacy.py, rag.py).
"""

import uuid
from datetime import datetime
from typing import Any, TypeGuard

from sqlalchemy import literal, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from persistence.models import Message, UTCDateTime
from persistence.services.sessions import session_exists
from shared import ErrorCode, MessageRole, NotFound
from shared.resources import ToolCall, ToolFields

TABLE = Message.metadata.tables[Message.__tablename__]
CHRONOLOGICAL = (Message.created_at, Message.id)

# Every column but the prompt, for lists: it can be as long as a whole conversation, and only a generator needs it.
# Nor the words search finds it by, which only search reads.
LISTED = tuple(
    c for c in TABLE.c if c.key not in ("prompt", "tool_names", "conversation_key", "request_key", "response")
)


def not_found(message_id: uuid.UUID) -> NotFound:
    return NotFound(f"message {message_id} not found")


def at(moment: datetime) -> Any:
    """A timestamp parameter typed like the columns it is compared with or written to."""
    return literal(moment, UTCDateTime())


def same_request(
    message: Message | None, session_id: uuid.UUID, role: MessageRole, **values: object
) -> TypeGuard[Message]:
    """Whether a stored message is the one a replayed request asks for: ``values`` are what the client chose."""
    return (
        message is not None
        and message.session_id == session_id
        and message.role == role
        and all(getattr(message, name) == value for name, value in values.items())
    )


# The table's own defaults (content "", attempts 0, version 1), and None for every other column.
_DEFAULTS: dict[str, Any] = {
    column.name: column.default.arg if isinstance(column.default, ScalarElementColumnDefault) else None
    for column in TABLE.c
}


def _json(models: list[ToolCall] | None) -> list[dict[str, Any]] | None:
    """Models as a JSON column stores them: whole, defaults included, so a call resent equals the one stored."""
    return None if models is None else [model.model_dump(mode="json") for model in models]


def tool_columns(given: ToolFields) -> dict[str, Any]:
    """The columns of what a message holds besides its text, and the words search finds it by."""
    return {
        "parts": given.parts,
        "tool_calls": _json(given.tool_calls),
        "tool_call_id": given.tool_call_id,
        "name": given.name,
        "tool_names": given.tool_names(),
    }


def new_row(session_id: uuid.UUID, message_id: uuid.UUID | None, now: datetime, **values: Any) -> dict[str, Any]:
    """Every column of a new message: the table's defaults, its ids and times, then ``values``."""
    fresh = {"id": message_id or uuid.uuid4(), "session_id": session_id, "sent_at": now, "created_at": now}
    return _DEFAULTS | fresh | {"updated_at": now} | values


def get_message_row(db: Session, message_id: uuid.UUID) -> Message:
    message = db.get(Message, message_id)
    if message is None:
        raise not_found(message_id)
    return message


def last_message_row(db: Session, session_id: uuid.UUID, role: MessageRole | None = None) -> Message:
    stmt = select(Message).where(Message.session_id == session_id)
    if role is not None:
        stmt = stmt.where(Message.role == role)
    message = db.scalar(stmt.order_by(*(column.desc() for column in CHRONOLOGICAL)).limit(1))
    if message is not None:
        return message
    if not session_exists(db, session_id):
        raise NotFound(f"session {session_id} not found")
    raise NotFound(f"session {session_id} has no {role.value + ' ' if role else ''}messages", code=ErrorCode.NO_MESSAGE)


def lock_message_row(db: Session, message_id: uuid.UUID) -> Message:
    message = db.scalar(
        select(Message).where(Message.id == message_id).with_for_update().execution_options(populate_existing=True)
    )
    if message is None:
        raise not_found(message_id)
    return message


def apply_changes(db: Session, message: Message, changes: dict[str, Any]) -> Message:
    """Write the changes; a message that changed gets a new version."""
    if changes:
        for name, value in changes.items():
            setattr(message, name, value)
        message.version += 1
        db.flush()
    return message
