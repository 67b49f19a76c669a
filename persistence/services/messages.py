"""Messages: created, read, listed, changed, deleted, as the message API does it. The row-level pieces this
shares with the other services are in message_rows.py; an answer's life (appends, claims, leases, its status
transitions) is in answers.py.
"""

import functools
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Select, Uuid, bindparam, delete, func, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from persistence.db import as_dicts, insert_on_conflict
from persistence.models import ChatSession, Message, UTCDateTime, utcnow
from persistence.pagination import decode_cursor, keyset_page
from persistence.services import Stored, answers, usage
from persistence.services.message_rows import (
    CHRONOLOGICAL,
    LISTED,
    TABLE,
    apply_changes,
    get_message_row,
    last_message_row,
    lock_message_row,
    new_row,
    not_found,
    same_request,
    tool_columns,
)
from persistence.services.sessions import session_exists
from shared import (
    Conflict,
    ErrorCode,
    MessageRead,
    MessageRole,
    NotFound,
    OffsetMismatch,
    Page,
    PreconditionFailed,
)
from shared import MessageStatus as Status
from shared.contract import MessageCreate, MessageDetail, MessageText, MessageUpdate


def create_message(db: Session, session_id: uuid.UUID, data: MessageCreate) -> Stored[MessageDetail]:
    """Store a message; a replay (same id, same body) is not created and returns the stored one.

    One statement when the message is new (a trigger moves its session up the list), so it can run
    outside a transaction.
    """
    return create_message_row(db, session_id, data).map(MessageDetail.model_validate)


def create_message_row(
    db: Session, session_id: uuid.UUID, data: MessageCreate, *, legacy_role: str | None = None
) -> Stored[dict[str, Any] | Message]:
    """``create_message`` for every API: a new message as the columns it was stored with (read models are
    validated from a dict far quicker than from an ORM object), a replay as the stored object.

    ``legacy_role`` is the role as the original message API's client spelled it, where that differs.
    """
    default_status = Status.PENDING if data.role == MessageRole.ASSISTANT else Status.COMPLETE
    now = utcnow()
    values = new_row(
        session_id,
        data.id,
        now,
        role=data.role,
        content=data.content,
        context=data.context,
        status=data.status or default_status,
        error=data.error,
        rating=data.rating,
        model=data.model,
        options=data.options,
        prompt=data.prompt,
        legacy_role=legacy_role,
        sent_at=data.sent_at or now,
        conversation_key=data.conversation_key,
        **tool_columns(data),
    )
    # A plain INSERT rather than session.add + flush: the unit of work cost more CPU than the statement
    # on this, the busiest write (docs/benchmarks.md). Its values are the whole row: nothing to reload.
    if _insert(db, values, session_id):
        return Stored(values, created=True)
    # The id is taken: a replay (perhaps racing its original, whose commit the INSERT waited for), or not.
    if (existing := db.get(Message, values["id"])) is None:  # deleted since the INSERT found it
        raise Conflict(f"message {values['id']} changed during the request: retry it", code=ErrorCode.RETRY)
    chosen = {
        "content": data.content,
        "context": data.context,
        "options": data.options,
        "prompt": data.prompt,
        "tool_calls": values["tool_calls"],
        "tool_call_id": data.tool_call_id,
    }
    if not same_request(existing, session_id, data.role, **chosen):
        raise Conflict(f"message {values['id']} already exists with a different body", code=ErrorCode.ID_CONFLICT)
    return Stored(existing, created=False)


@functools.cache
def _insert_statement(dialect: str) -> Insert:
    return insert_on_conflict(dialect, TABLE).on_conflict_do_nothing().returning(TABLE.c.id)


def _insert(db: Session, values: dict[str, Any], session_id: uuid.UUID) -> bool:
    """Insert a message unless its id is taken; returns whether it was inserted."""
    try:
        return db.scalar(_insert_statement(db.get_bind().dialect.name), values) is not None
    except IntegrityError as exc:  # the only constraint left to fail is the session's foreign key
        raise NotFound(f"session {session_id} not found") from exc


def owner_of(db: Session, message_id: uuid.UUID) -> str | None:
    """The user of the message's session, None when there is no such message."""
    return db.scalar(
        select(ChatSession.user_id).join(Message, Message.session_id == ChatSession.id).where(Message.id == message_id)
    )


def get_message(db: Session, message_id: uuid.UUID) -> MessageDetail:
    return MessageDetail.model_validate(get_message_row(db, message_id))


def read_text(db: Session, message_id: uuid.UUID, offset: int) -> MessageText:
    """A message's content from ``offset`` on, and how it stands.

    Cut in the database: an answer polled as it grows sends only its new text, not all of it each time.
    """
    row = db.execute(_text_statement(), {"id": message_id, "start": offset + 1}).mappings().one_or_none()
    if row is None:
        raise not_found(message_id)
    if offset > row["length"]:
        length = row["length"]
        raise OffsetMismatch(f"offset {offset} is past the end of the content ({length})", length=length)
    return MessageText.model_validate({**row, "offset": offset})


@functools.cache
def _text_statement() -> Select[Any]:
    content = TABLE.c.content
    text = func.substr(content, bindparam("start")).label("text")
    names = ("id", "version", "status", "error", "finish_reason", "usage", "tool_calls", "model", "answer_parts")
    columns = (TABLE.c[name] for name in names)
    return select(text, func.length(content).label("length"), *columns).where(TABLE.c.id == bindparam("id"))


@functools.cache
def _page_statement(*, newest_first: bool, after_cursor: bool, by_status: bool) -> Select[Any]:
    """The query of a page of a session's messages, built once per shape (with bound parameters)."""
    stmt = select(*LISTED).where(TABLE.c.session_id == bindparam("session_id"))
    if by_status:
        stmt = stmt.where(TABLE.c.status == bindparam("status", type_=TABLE.c.status.type))
    key = tuple_(*(TABLE.c[column.key] for column in CHRONOLOGICAL))
    if after_cursor:
        after = tuple_(bindparam("after_created_at", type_=UTCDateTime()), bindparam("after_id", type_=Uuid()))
        stmt = stmt.where(key < after if newest_first else key > after)
    order = [column.desc() for column in key.clauses] if newest_first else list(key.clauses)
    return stmt.order_by(*order).limit(bindparam("limit"))


def list_messages(
    db: Session,
    session_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None = None,
    status: Status | None = None,
    newest_first: bool = False,
) -> Page[MessageRead]:
    """Chronological (or newest first), one keyset page at a time.

    Validated from dicts of the columns rather than from ORM objects or rows, and a statement built once:
    a page is read far more often than anything else.
    """
    params: dict[str, Any] = {"session_id": session_id, "status": status, "limit": limit + 1}
    if cursor is not None:
        params["after_created_at"], params["after_id"] = decode_cursor(cursor, datetime, uuid.UUID)
    stmt = _page_statement(newest_first=newest_first, after_cursor=cursor is not None, by_status=status is not None)
    rows = as_dicts(db.execute(stmt, params))
    if not rows and not session_exists(db, session_id):
        raise NotFound(f"session {session_id} not found")
    return keyset_page(Page[MessageRead], rows, limit, "created_at", "id")


def last_message(db: Session, session_id: uuid.UUID, role: MessageRole | None = None) -> MessageDetail:
    return MessageDetail.model_validate(last_message_row(db, session_id, role))


def delete_message(db: Session, message_id: uuid.UUID) -> None:
    """Delete one message (a Responses API client deleting a response): an answer being generated stops at its
    next write, which finds it gone."""
    usage.release_message(db, message_id)
    if db.execute(delete(Message).where(Message.id == message_id)).rowcount == 0:  # type: ignore[attr-defined]
        raise not_found(message_id)


def update_message(
    db: Session, message_id: uuid.UUID, data: MessageUpdate, *, if_match: int | None, lease_seconds: float
) -> MessageDetail:
    message = lock_message_row(db, message_id)
    if if_match is not None and message.version != if_match:
        raise PreconditionFailed(f"message is at version {message.version}, not {if_match}", version=message.version)
    changes = data.changes()
    new_status = changes.pop("status", message.status)
    if message.status == Status.COMPLETE and (new_status != Status.COMPLETE or set(changes) - {"rating"}):
        raise Conflict("a complete message is final: only its rating can change", status=message.status)
    if new_status != message.status:
        answers.set_status_by_hand(message, new_status, lease_seconds)
        changes["status"] = new_status
    if "content" in changes and message.answer_parts is not None:
        changes["answer_parts"] = None  # a text written by hand is no model's: its offsets would mislead
    apply_changes(db, message, changes)
    if new_status in (Status.COMPLETE, Status.FAILED) and "status" in changes:
        # Ended by hand (cancelled, given up): the run's own figures never came, so its text is counted.
        usage.settle(db, message_id, None, len(message.content))
    return MessageDetail.model_validate(message)
