"""Messages: created, read, listed, changed. Every query on the messages table lives here, in turns.py (a
question and its answer stored together) or in answers.py (appends, claims, leases: the life of an answer).
"""

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeGuard

from sqlalchemy import (
    Insert,
    Row,
    Select,
    Uuid,
    bindparam,
    delete,
    func,
    literal,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnClause
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from persistence.db import as_dicts, insert_on_conflict
from persistence.models import ChatSession, Message, UTCDateTime, utcnow
from persistence.pagination import decode_cursor, keyset_page
from persistence.services import Stored, usage
from persistence.services.sessions import session_exists
from shared import (
    Conflict,
    ErrorCode,
    MessageRead,
    MessageRole,
    MessageStatus,
    NotFound,
    OffsetMismatch,
    Page,
    PreconditionFailed,
)
from shared.contract import (
    ConversationFind,
    ConversationFound,
    MessageCreate,
    MessageDetail,
    MessageText,
    MessageUpdate,
)
from shared.resources import ToolCall, ToolFields

Status = MessageStatus

TRANSITIONS: dict[MessageStatus, frozenset[MessageStatus]] = {
    Status.PENDING: frozenset({Status.IN_PROGRESS, Status.FAILED}),
    Status.IN_PROGRESS: frozenset({Status.COMPLETE, Status.FAILED, Status.PENDING}),
    Status.FAILED: frozenset({Status.IN_PROGRESS, Status.PENDING}),
    Status.COMPLETE: frozenset(),
}

# A literal (not a bound parameter) so the planner can use the partial index ix_messages_stale.
_IN_PROGRESS_SQL: ColumnClause[str] = literal_column("'in_progress'")

_CHRONOLOGICAL = (Message.created_at, Message.id)
_TABLE = Message.metadata.tables[Message.__tablename__]


def _not_found(message_id: uuid.UUID) -> NotFound:
    return NotFound(f"message {message_id} not found")


def _at(moment: datetime) -> Any:
    """A timestamp parameter typed like the columns it is compared with or written to."""
    return literal(moment, UTCDateTime())


def _same_request(
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
    for column in _TABLE.c
}


def _json(models: list[ToolCall] | None) -> list[dict[str, Any]] | None:
    """Models as a JSON column stores them: whole, defaults included, so a call resent equals the one stored."""
    return None if models is None else [model.model_dump(mode="json") for model in models]


def _tool_columns(given: ToolFields) -> dict[str, Any]:
    """The columns of what a message holds besides its text, and the words search finds it by."""
    return {
        "parts": given.parts,
        "tool_calls": _json(given.tool_calls),
        "tool_call_id": given.tool_call_id,
        "name": given.name,
        "tool_names": given.tool_names(),
    }


def _new_row(session_id: uuid.UUID, message_id: uuid.UUID | None, now: datetime, **values: Any) -> dict[str, Any]:
    """Every column of a new message: the table's defaults, its ids and times, then ``values``."""
    fresh = {"id": message_id or uuid.uuid4(), "session_id": session_id, "sent_at": now, "created_at": now}
    return _DEFAULTS | fresh | {"updated_at": now} | values


def create_message(db: Session, session_id: uuid.UUID, data: MessageCreate) -> Stored[MessageDetail]:
    """Store a message; a replay (same id, same body) is not created and returns the stored one.

    One statement when the message is new (a trigger moves its session up the list), so it can run
    outside a transaction.
    """
    return _store_message(db, session_id, data).map(MessageDetail.model_validate)


def _store_message(
    db: Session, session_id: uuid.UUID, data: MessageCreate, *, legacy_role: str | None = None
) -> Stored[dict[str, Any] | Message]:
    """``create_message`` for every API: a new message as the columns it was stored with (read models are
    validated from a dict far quicker than from an ORM object), a replay as the stored object.

    ``legacy_role`` is the role as the original message API's client spelled it, where that differs.
    """
    default_status = Status.PENDING if data.role == MessageRole.ASSISTANT else Status.COMPLETE
    now = utcnow()
    values = _new_row(
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
        **_tool_columns(data),
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
    if not _same_request(existing, session_id, data.role, **chosen):
        raise Conflict(f"message {values['id']} already exists with a different body", code=ErrorCode.ID_CONFLICT)
    return Stored(existing, created=False)


@functools.cache
def _insert_statement(dialect: str) -> Insert:
    return insert_on_conflict(dialect, _TABLE).on_conflict_do_nothing().returning(_TABLE.c.id)


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
    return MessageDetail.model_validate(_get_message(db, message_id))


def _get_message(db: Session, message_id: uuid.UUID) -> Message:
    message = db.get(Message, message_id)
    if message is None:
        raise _not_found(message_id)
    return message


def read_text(db: Session, message_id: uuid.UUID, offset: int) -> MessageText:
    """A message's content from ``offset`` on, and how it stands.

    Cut in the database: an answer polled as it grows sends only its new text, not all of it each time.
    """
    row = db.execute(_text_statement(), {"id": message_id, "start": offset + 1}).mappings().one_or_none()
    if row is None:
        raise _not_found(message_id)
    if offset > row["length"]:
        length = row["length"]
        raise OffsetMismatch(f"offset {offset} is past the end of the content ({length})", length=length)
    return MessageText.model_validate({**row, "offset": offset})


@functools.cache
def _text_statement() -> Select[Any]:
    content = _TABLE.c.content
    text = func.substr(content, bindparam("start")).label("text")
    names = ("id", "version", "status", "error", "finish_reason", "usage", "tool_calls")
    columns = (_TABLE.c[name] for name in names)
    return select(text, func.length(content).label("length"), *columns).where(_TABLE.c.id == bindparam("id"))


# Every column but the prompt, for lists: it can be as long as a whole conversation, and only a generator needs it.
# Nor the words search finds it by, which only search reads.
_LISTED = tuple(
    c for c in _TABLE.c if c.key not in ("prompt", "tool_names", "conversation_key", "request_key", "response")
)


@functools.cache
def _page_statement(*, newest_first: bool, after_cursor: bool, by_status: bool) -> Select[Any]:
    """The query of a page of a session's messages, built once per shape (with bound parameters)."""
    stmt = select(*_LISTED).where(_TABLE.c.session_id == bindparam("session_id"))
    if by_status:
        stmt = stmt.where(_TABLE.c.status == bindparam("status", type_=_TABLE.c.status.type))
    key = tuple_(*(_TABLE.c[column.key] for column in _CHRONOLOGICAL))
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
    status: MessageStatus | None = None,
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


def find_conversation(db: Session, data: ConversationFind) -> ConversationFound:
    """The session a client's conversation goes on in: the newest of the user's answers with that key which is
    the one the client resent (same text, same calls: their arguments as JSON values) and is still its session's
    last message, or is followed only by the results this request sends (a retried round). Else 404: an
    edited history, or a branch from an earlier answer, starts a session of its own."""
    candidates = db.execute(
        select(Message.id, Message.session_id, Message.content, Message.tool_calls)
        .join(ChatSession, ChatSession.id == Message.session_id)
        .where(Message.conversation_key == data.conversation_key, ChatSession.user_id == data.user_id)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(8)
    ).all()
    resent = [call.as_resent() for call in data.tool_calls or []]
    for candidate in candidates:
        stored_calls = [ToolCall.model_validate(call).as_resent() for call in candidate.tool_calls or []]
        if candidate.content != data.content or stored_calls != resent:
            continue
        after = db.execute(
            select(Message.role, Message.tool_call_id)
            .where(
                Message.session_id == candidate.session_id,
                Message.created_at > select(Message.created_at).where(Message.id == candidate.id).scalar_subquery(),
            )
            .order_by(Message.created_at, Message.id)
            .limit(len(data.results_of) + 2)
        ).all()
        if not after or _is_this_round(after, data.results_of):
            return ConversationFound(session_id=candidate.session_id, answer_id=candidate.id)
    raise NotFound("no session holds this conversation")


def whole_conversation(db: Session, key: str, user_id: str) -> uuid.UUID | None:
    """The newest session of ``user_id`` whose last message its client added under ``key``: it holds that whole
    conversation (``MessageCreate.conversation_key``)."""
    rows = db.execute(
        select(Message.id, Message.session_id)
        .join(ChatSession, ChatSession.id == Message.session_id)
        .where(Message.conversation_key == key, ChatSession.user_id == user_id, Message.role != MessageRole.ASSISTANT)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(8)
    ).all()
    for row in rows:
        last = db.scalar(
            select(Message.id)
            .where(Message.session_id == row.session_id)
            .order_by(*(column.desc() for column in _CHRONOLOGICAL))
            .limit(1)
        )
        if last == row.id:
            return uuid.UUID(str(row.session_id))
    return None


def _is_this_round(after: Sequence[Row[MessageRole, str | None]], results_of: list[str]) -> bool:
    """Whether what follows an answer is exactly the round resent: its results, in order, and perhaps their
    answer; anything else (another result, an edited one's id, a later question) is another conversation."""
    results = [(MessageRole.TOOL, call_id) for call_id in results_of]
    rounds = [(row.role, row.tool_call_id) for row in after]
    return (
        bool(results)
        and rounds[: len(results)] == results
        and len(rounds) <= len(results) + 1
        and all(role == MessageRole.ASSISTANT for role, _ in rounds[len(results) :])
    )


def _newest_messages(db: Session, limit: int, session_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` messages of a session, or of every session, oldest first (one index seek)."""
    stmt = select(*_LISTED)
    if session_id is not None:
        stmt = stmt.where(_TABLE.c.session_id == session_id)
    stmt = stmt.order_by(*(_TABLE.c[column.key].desc() for column in _CHRONOLOGICAL)).limit(limit)
    return as_dicts(db.execute(stmt))[::-1]


def count_messages(db: Session, session_id: uuid.UUID) -> int:
    return db.scalar(select(func.count()).select_from(_TABLE).where(_TABLE.c.session_id == session_id)) or 0


def _messages_from(db: Session, session_id: uuid.UUID, *, skip: int, limit: int) -> list[dict[str, Any]]:
    """A session's messages in the order they were written, from the ``skip``-th on (offset pages)."""
    key = (_TABLE.c[column.key] for column in _CHRONOLOGICAL)
    stmt = select(*_LISTED).where(_TABLE.c.session_id == session_id).order_by(*key).offset(skip).limit(limit)
    return as_dicts(db.execute(stmt))


def last_message(db: Session, session_id: uuid.UUID, role: MessageRole | None = None) -> MessageDetail:
    return MessageDetail.model_validate(_last_message(db, session_id, role))


def _last_message(db: Session, session_id: uuid.UUID, role: MessageRole | None = None) -> Message:
    stmt = select(Message).where(Message.session_id == session_id)
    if role is not None:
        stmt = stmt.where(Message.role == role)
    message = db.scalar(stmt.order_by(*(column.desc() for column in _CHRONOLOGICAL)).limit(1))
    if message is not None:
        return message
    if not session_exists(db, session_id):
        raise NotFound(f"session {session_id} not found")
    raise NotFound(f"session {session_id} has no {role.value + ' ' if role else ''}messages", code=ErrorCode.NO_MESSAGE)


def delete_message(db: Session, message_id: uuid.UUID) -> None:
    """Delete one message (a Responses API client deleting a response): an answer being generated stops at its
    next write, which finds it gone."""
    usage.release_message(db, message_id)
    if db.execute(delete(Message).where(Message.id == message_id)).rowcount == 0:  # type: ignore[attr-defined]
        raise _not_found(message_id)


def _lock(db: Session, message_id: uuid.UUID) -> Message:
    message = db.scalar(
        select(Message).where(Message.id == message_id).with_for_update().execution_options(populate_existing=True)
    )
    if message is None:
        raise _not_found(message_id)
    return message


def update_message(
    db: Session, message_id: uuid.UUID, data: MessageUpdate, *, if_match: int | None, lease_seconds: float
) -> MessageDetail:
    message = _lock(db, message_id)
    if if_match is not None and message.version != if_match:
        raise PreconditionFailed(f"message is at version {message.version}, not {if_match}", version=message.version)
    changes = data.changes()
    new_status = changes.pop("status", message.status)
    if message.status == Status.COMPLETE and (new_status != Status.COMPLETE or set(changes) - {"rating"}):
        raise Conflict("a complete message is final: only its rating can change", status=message.status)
    if new_status != message.status:
        if new_status not in TRANSITIONS[message.status]:
            raise Conflict(
                f"a message cannot go from {message.status} to {new_status}",
                status=message.status,
                code=ErrorCode.ILLEGAL_TRANSITION,
            )
        _enter_status(message, new_status, lease_seconds)
        changes["status"] = new_status
    _apply(db, message, changes)
    if new_status in (Status.COMPLETE, Status.FAILED) and "status" in changes:
        # Ended by hand (cancelled, given up): the run's own figures never came, so its text is counted.
        usage.settle(db, message_id, None, len(message.content))
    return MessageDetail.model_validate(message)


def _enter_status(message: Message, status: MessageStatus, lease_seconds: float) -> None:
    message.lease_owner = None
    # Set in progress by hand rather than claimed: nobody owns it, but crash recovery must still find it.
    in_progress = status == Status.IN_PROGRESS
    message.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds) if in_progress else None


def _edit_message(db: Session, message_id: uuid.UUID, changes: dict[str, Any]) -> Message:
    """An edit by the original message API: content and rating, whatever the status."""
    return _apply(db, _lock(db, message_id), changes)


def _apply(db: Session, message: Message, changes: dict[str, Any]) -> Message:
    """Write the changes; a message that changed gets a new version."""
    if changes:
        for name, value in changes.items():
            setattr(message, name, value)
        message.version += 1
        db.flush()
    return message
