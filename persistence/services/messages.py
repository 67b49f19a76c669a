"""Messages and the life of every answer: every query on the messages table lives here.

Appends and claims are single conditional UPDATEs, so they are atomic on SQLite and PostgreSQL alike:
of two concurrent requests racing for the same row, exactly one matches its condition.
"""

import contextlib
import functools
import uuid
from datetime import datetime, timedelta
from typing import Any, TypeGuard

from sqlalchemy import (
    Column,
    Insert,
    Row,
    Select,
    Update,
    Uuid,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer
from sqlalchemy.sql.elements import ColumnClause, ColumnElement
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from persistence.db import as_dicts, insert_on_conflict
from persistence.models import ChatSession, Message, UTCDateTime, utcnow
from persistence.pagination import decode_cursor, keyset_page
from persistence.schemas import MessageCreate
from persistence.services import usage
from persistence.services.sessions import open_session_params, open_session_statement, session_exists
from persistence.services.sessions import owner_of as session_owner
from shared import (
    Conflict,
    DomainError,
    ErrorCode,
    MessageRole,
    MessageStatus,
    NotFound,
    OffsetMismatch,
    PreconditionFailed,
)
from shared.contract import AppendRequest, ClaimRequest, MessageUpdate, TurnCreate

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


def _new_row(session_id: uuid.UUID, message_id: uuid.UUID | None, now: datetime, **values: Any) -> dict[str, Any]:
    """Every column of a new message: the table's defaults, its ids and times, then ``values``."""
    fresh = {"id": message_id or uuid.uuid4(), "session_id": session_id, "sent_at": now, "created_at": now}
    return _DEFAULTS | fresh | {"updated_at": now} | values


def create_message(
    db: Session, session_id: uuid.UUID, data: MessageCreate, *, legacy_role: str | None = None
) -> tuple[Message, bool]:
    """Store a message; returns it (not attached to ``db``) and whether it is new (False: a replay).

    ``legacy_role`` is the role as the original message API's client spelled it, where that differs.

    One statement when the message is new (a trigger moves its session up the list), so it can run
    outside a transaction.
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
    )
    # A plain INSERT rather than session.add + flush: the unit of work cost more CPU than the statement
    # on this, the busiest write (docs/benchmarks.md). The returned object is complete without a reload.
    if _insert(db, values, session_id):
        return Message(**values), True
    # The id is taken: a replay (perhaps racing its original, whose commit the INSERT waited for), or not.
    if (existing := db.get(Message, values["id"])) is None:  # deleted since the INSERT found it
        raise Conflict(f"message {values['id']} changed during the request: retry it", code=ErrorCode.RETRY)
    chosen = {"content": data.content, "context": data.context, "options": data.options, "prompt": data.prompt}
    if not _same_request(existing, session_id, data.role, **chosen):
        raise Conflict(f"message {values['id']} already exists with a different body", code=ErrorCode.ID_CONFLICT)
    return existing, False


@functools.cache
def _insert_statement(dialect: str) -> Insert:
    return insert_on_conflict(dialect, _TABLE).on_conflict_do_nothing().returning(_TABLE.c.id)


def _insert(db: Session, values: dict[str, Any], session_id: uuid.UUID) -> bool:
    """Insert a message unless its id is taken; returns whether it was inserted."""
    try:
        return db.scalar(_insert_statement(db.get_bind().dialect.name), values) is not None
    except IntegrityError as exc:  # the only constraint left to fail is the session's foreign key
        raise NotFound(f"session {session_id} not found") from exc


def start_turn(
    db: Session, session_id: uuid.UUID, data: TurnCreate, *, lease_seconds: float
) -> tuple[Message, Message, bool]:
    """Store a question and its answer with one INSERT, the answer claimed by ``data.owner`` when given.

    Returns both (not attached to ``db``) and whether they are new; a replay of a stored turn returns
    the turn as it is now (its answer may have grown), without claiming it. Runs outside a transaction:
    the session, when created here, stays even if the messages turn out to conflict. A turn with token
    budgets runs in one. A turn that opens a session is refused (404) when the session is another user's.
    """
    now = utcnow()
    dialect = db.get_bind().dialect.name
    params: dict[str, Any] = {}
    if data.session is not None:
        params = open_session_params(session_id, data.session.user_id, data.session.title, now)
        if dialect != "postgresql":  # SQLite has no INSERT inside WITH: the session goes first, on its own
            opened = db.execute(open_session_statement(dialect), params).rowcount  # type: ignore[attr-defined]
            if not opened and data.session.exclusive and session_owner(db, session_id) != data.session.user_id:
                raise NotFound(f"session {session_id} not found")  # another user's, as if it did not exist
    question = _new_row(
        session_id,
        data.question.id,
        now,
        role=MessageRole.USER,
        content=data.question.content,
        context=data.question.context,
        status=Status.COMPLETE,
    )
    claim: dict[str, Any] = {}
    if data.owner is not None:
        expires = now + timedelta(seconds=data.lease_seconds or lease_seconds)
        claim = {"status": Status.IN_PROGRESS, "lease_owner": data.owner, "lease_expires_at": expires, "attempts": 1}
    # A microsecond later, so the answer sorts after its question whatever their ids.
    later = now + timedelta(microseconds=1)
    answer = (
        _new_row(
            session_id,
            data.answer.id,
            later,
            role=MessageRole.ASSISTANT,
            status=Status.PENDING,
            model=data.answer.model,
            options=data.answer.options,
            prompt=data.answer.prompt,
        )
        | claim
    )
    params |= {
        f"{row}_{name}": value
        for row, values in (("question", question), ("answer", answer))
        for name, value in values.items()
    }
    opens_in_statement = dialect == "postgresql" and data.session is not None
    exclusive = data.session is not None and data.session.exclusive
    stmt = _turn_statement(dialect, opens_session=opens_in_statement, exclusive=exclusive)
    budgeted = data.account is not None and data.account.has_budget
    if budgeted:  # checked first, under its user's lock: refused, nothing is stored
        assert data.account is not None
        usage.open_record(db, answer["id"], answer["model"], data.account, now)
    try:
        # In a transaction (a budgeted turn), a failed INSERT must not abort it: a savepoint.
        with db.begin_nested() if budgeted else contextlib.nullcontext():
            result = db.execute(stmt, params)
    except IntegrityError:
        return _stored_turn(db, session_id, question, answer)
    if opens_in_statement and exclusive and not result.all():  # another user's session (see _turn_statement)
        raise NotFound(f"session {session_id} not found")
    if data.account is not None and not budgeted:
        usage.open_record(db, answer["id"], answer["model"], data.account, now)
    return Message(**question), Message(**answer), True


@functools.cache
def _turn_statement(dialect: str, *, opens_session: bool, exclusive: bool = False) -> Insert:
    """A turn's two messages in one INSERT, so both are stored or neither and no transaction is needed.

    With ``opens_session`` (PostgreSQL) the session is created in the same statement, in a CTE: one round
    trip and one commit instead of two before the first word of an answer. With ``exclusive``, only into a
    session the statement created or its user's own, and the ids stored are returned (none: refused).
    """

    def value(row: str, column: Column[Any]) -> ColumnElement[Any]:
        param = bindparam(f"{row}_{column.name}", type_=column.type)
        # PostgreSQL types a UNION's columns from its values, and would take two NULLs for text.
        return cast(param, column.type) if dialect == "postgresql" else param

    # INSERT ... SELECT ... UNION ALL SELECT: a multi-row VALUES would be compiled anew for every request.
    rows = [select(*(value(row, column) for column in _TABLE.c)) for row in ("question", "answer")]
    if not opens_session:
        return insert(_TABLE).from_select(list(_TABLE.c), union_all(*rows))
    sessions = ChatSession.__table__
    if not exclusive:
        return (
            insert(_TABLE)
            .from_select(list(_TABLE.c), union_all(*rows))
            .add_cte(open_session_statement(dialect).cte("opened"))
        )
    opened = open_session_statement(dialect).returning(sessions.c.id).cte("opened")
    # Only into a session this turn opened or its user's own: a session id taken by another user stores nothing
    # (the same statement cannot see the CTE's row in the table, hence both tests).
    own = or_(
        exists(select(opened.c.id)),
        exists(
            select(sessions.c.id).where(
                sessions.c.id == bindparam("session_id"), sessions.c.user_id == bindparam("session_user_id")
            )
        ),
    )
    rows = [row.where(own) for row in rows]
    stmt = insert(_TABLE).from_select(list(_TABLE.c), union_all(*rows)).add_cte(opened)
    return stmt.returning(_TABLE.c.id)  # what was stored: nothing, when refused


def _stored_turn(
    db: Session, session_id: uuid.UUID, question: dict[str, Any], answer: dict[str, Any]
) -> tuple[Message, Message, bool]:
    """After a turn's INSERT failed: a replay of the same turn, a conflict, or a session that does not exist."""
    stored_question, stored_answer = db.get(Message, question["id"]), db.get(Message, answer["id"])
    if stored_question is None and stored_answer is None:
        if not session_exists(db, session_id):
            raise NotFound(f"session {session_id} not found")
        raise Conflict("the turn's messages changed during the request: retry it", code=ErrorCode.RETRY)
    if not _same_request(
        stored_question, session_id, MessageRole.USER, content=question["content"], context=question["context"]
    ):
        raise Conflict(f"message {question['id']} already exists with a different body", code=ErrorCode.ID_CONFLICT)
    # The model is left out: finishing an answer may record the one that actually answered.
    if not _same_request(
        stored_answer, session_id, MessageRole.ASSISTANT, options=answer["options"], prompt=answer["prompt"]
    ):
        raise Conflict(
            f"message {answer['id']} already exists and is not this turn's answer", code=ErrorCode.ID_CONFLICT
        )
    return stored_question, stored_answer, False


def owner_of(db: Session, message_id: uuid.UUID) -> str | None:
    """The user of the message's session, None when there is no such message."""
    return db.scalar(
        select(ChatSession.user_id).join(Message, Message.session_id == ChatSession.id).where(Message.id == message_id)
    )


def get_message(db: Session, message_id: uuid.UUID) -> Message:
    message = db.get(Message, message_id)
    if message is None:
        raise _not_found(message_id)
    return message


def read_text(db: Session, message_id: uuid.UUID, offset: int) -> dict[str, Any]:
    """A message's content from ``offset`` on, and how it stands (the fields of ``MessageText``).

    Cut in the database: an answer polled as it grows sends only its new text, not all of it each time.
    """
    row = db.execute(_text_statement(), {"id": message_id, "start": offset + 1}).mappings().one_or_none()
    if row is None:
        raise _not_found(message_id)
    if offset > row["length"]:
        length = row["length"]
        raise OffsetMismatch(f"offset {offset} is past the end of the content ({length})", length=length)
    return dict(row) | {"offset": offset}


@functools.cache
def _text_statement() -> Select[Any]:
    content = _TABLE.c.content
    text = func.substr(content, bindparam("start")).label("text")
    columns = (_TABLE.c[name] for name in ("id", "version", "status", "error", "finish_reason", "usage"))
    return select(text, func.length(content).label("length"), *columns).where(_TABLE.c.id == bindparam("id"))


# Every column but the prompt, for lists: it can be as long as a whole conversation, and only a generator needs it.
_LISTED = tuple(c for c in _TABLE.c if c.key != "prompt")


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
) -> tuple[list[dict[str, Any]], str | None]:
    """Chronological (or newest first), one keyset page at a time: dicts of every column of a message.

    Dicts rather than ORM objects or rows, and a statement built once: a page is read far more often than
    anything else.
    """
    params: dict[str, Any] = {"session_id": session_id, "status": status, "limit": limit + 1}
    if cursor is not None:
        params["after_created_at"], params["after_id"] = decode_cursor(cursor, datetime, uuid.UUID)
    stmt = _page_statement(newest_first=newest_first, after_cursor=cursor is not None, by_status=status is not None)
    rows = as_dicts(db.execute(stmt, params))
    if not rows and not session_exists(db, session_id):
        raise NotFound(f"session {session_id} not found")
    return keyset_page(rows, limit, "created_at", "id")


def newest_messages(db: Session, limit: int, session_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` messages of a session, or of every session, oldest first (one index seek)."""
    stmt = select(*_LISTED)
    if session_id is not None:
        stmt = stmt.where(_TABLE.c.session_id == session_id)
    stmt = stmt.order_by(*(_TABLE.c[column.key].desc() for column in _CHRONOLOGICAL)).limit(limit)
    return as_dicts(db.execute(stmt))[::-1]


def count_messages(db: Session, session_id: uuid.UUID) -> int:
    return db.scalar(select(func.count()).select_from(_TABLE).where(_TABLE.c.session_id == session_id)) or 0


def list_messages_from(db: Session, session_id: uuid.UUID, *, skip: int, limit: int) -> list[dict[str, Any]]:
    """A session's messages in the order they were written, from the ``skip``-th on (offset pages)."""
    key = (_TABLE.c[column.key] for column in _CHRONOLOGICAL)
    stmt = select(*_LISTED).where(_TABLE.c.session_id == session_id).order_by(*key).offset(skip).limit(limit)
    return as_dicts(db.execute(stmt))


def last_message(db: Session, session_id: uuid.UUID, role: MessageRole | None = None) -> Message:
    stmt = select(Message).where(Message.session_id == session_id)
    if role is not None:
        stmt = stmt.where(Message.role == role)
    message = db.scalar(stmt.order_by(*(column.desc() for column in _CHRONOLOGICAL)).limit(1))
    if message is not None:
        return message
    if not session_exists(db, session_id):
        raise NotFound(f"session {session_id} not found")
    raise NotFound(f"session {session_id} has no {role.value + ' ' if role else ''}messages", code=ErrorCode.NO_MESSAGE)


def _lock(db: Session, message_id: uuid.UUID) -> Message:
    message = db.scalar(
        select(Message).where(Message.id == message_id).with_for_update().execution_options(populate_existing=True)
    )
    if message is None:
        raise _not_found(message_id)
    return message


def update_message(
    db: Session, message_id: uuid.UUID, data: MessageUpdate, *, if_match: int | None, lease_seconds: float
) -> Message:
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
    return message


def _enter_status(message: Message, status: MessageStatus, lease_seconds: float) -> None:
    message.lease_owner = None
    # Set in progress by hand rather than claimed: nobody owns it, but crash recovery must still find it.
    in_progress = status == Status.IN_PROGRESS
    message.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds) if in_progress else None


def edit_message(db: Session, message_id: uuid.UUID, changes: dict[str, Any]) -> Message:
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


@functools.cache
def _append_statement(*, by_owner: bool, finish: frozenset[str]) -> Update:
    """The conditional UPDATE of an append, built once per shape (with bound parameters)."""
    table = _TABLE
    conditions = [
        table.c.id == bindparam("message_id"),
        func.length(table.c.content) == bindparam("offset"),
        table.c.status != Status.COMPLETE,
    ]
    if by_owner:
        conditions.append(table.c.lease_owner == bindparam("owner"))
    expires = bindparam("expires", type_=UTCDateTime())
    values: dict[str, Any] = {
        "content": table.c.content + bindparam("text", type_=table.c.content.type),
        "version": table.c.version + 1,
        "updated_at": bindparam("now", type_=UTCDateTime()),
        "lease_expires_at": case((table.c.status == Status.IN_PROGRESS, expires), else_=table.c.lease_expires_at),
    }
    if finish:
        # The last text and how the answer ended, in the one conditional statement.
        conditions.append(table.c.status == Status.IN_PROGRESS)
        values |= {name: bindparam(f"finish_{name}", type_=table.c[name].type) for name in finish}
        values |= {"lease_owner": None, "lease_expires_at": None}
    length = func.length(table.c.content).label("length")
    returning = (table.c.id, length, table.c.version, table.c.status, table.c.lease_expires_at)
    return update(table).where(*conditions).values(values).returning(*returning)


def append_text(db: Session, message_id: uuid.UUID, data: AppendRequest, *, lease_seconds: float) -> Row[Any]:
    """Append ``data.text`` at ``data.offset``, which must be the current length: a retried append is a 409."""
    now = utcnow()
    finish = data.finish.model_dump(exclude_unset=True) if data.finish is not None else {}
    params = {
        "message_id": message_id,
        "offset": data.offset,
        "owner": data.owner,
        "text": data.text,
        "now": now,
        "expires": now + timedelta(seconds=data.lease_seconds or lease_seconds),
    } | {f"finish_{name}": value for name, value in finish.items()}
    stmt = _append_statement(by_owner=data.owner is not None, finish=frozenset(finish))
    row = db.execute(stmt, params).one_or_none()
    if row is not None:
        if finish:
            usage.settle(db, message_id, finish.get("usage"), row.length)
        return row
    raise _refusal_of_append(db, message_id, data)


def _refusal_of_append(db: Session, message_id: uuid.UUID, data: AppendRequest) -> DomainError:
    """Why an append matched no row, as the error to raise."""
    row = db.execute(
        select(Message.status, func.length(Message.content), Message.lease_owner).where(Message.id == message_id)
    ).one_or_none()
    if row is None:
        return _not_found(message_id)
    status, length, owner = row
    if status == Status.COMPLETE:
        return Conflict("a complete message cannot be appended to", status=status, length=length)
    if data.owner is not None and owner != data.owner:
        return Conflict(
            f"the lease is held by {owner!r}",
            code=ErrorCode.LEASE_LOST,
            status=status,
            lease_owner=owner,
            length=length,
        )
    if data.finish is not None and status != Status.IN_PROGRESS:
        return Conflict(
            f"only an answer in progress can be finished; it is {status}",
            code=ErrorCode.ILLEGAL_TRANSITION,
            status=status,
            length=length,
        )
    return OffsetMismatch(f"offset {data.offset} is not the current length {length}", length=length)


def hand_over_last_answer(db: Session, session_id: uuid.UUID) -> Message:
    """Give a session's last answer, when it is pending or failed, to whichever gateway scans for orphans next.

    It is left as a gateway that died leaves its answers: in progress, with its lease already over. Crash
    recovery then continues it from its saved text (no new generation). An answer already orphaned is
    returned as it is; anything else is a 409 that says why there is nothing to resume.
    """
    try:
        answer = last_message(db, session_id, MessageRole.ASSISTANT)
    except NotFound as exc:
        if exc.code != "no_message":
            raise
        raise Conflict("the session has no answer to resume", code=ErrorCode.NOTHING_TO_RESUME) from exc
    now = utcnow()
    handed = db.scalar(
        update(Message)
        .where(Message.id == answer.id, Message.status.in_([Status.PENDING, Status.FAILED]))
        .values(
            status=Status.IN_PROGRESS,
            lease_owner=None,
            lease_expires_at=_at(now),
            version=Message.version + 1,
            updated_at=_at(now),
        )
        .returning(Message)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    if handed is not None:
        return handed
    current = db.scalar(select(Message).where(Message.id == answer.id).execution_options(populate_existing=True))
    if current is None:
        raise _not_found(answer.id)
    if current.status == Status.COMPLETE:
        raise Conflict(
            "the session's last answer is complete: there is nothing to resume",
            code=ErrorCode.NOTHING_TO_RESUME,
            status=current.status,
        )
    if current.lease_expires_at is not None and current.lease_expires_at > now:
        raise Conflict(
            f"the session's last answer is being generated by {current.lease_owner!r}",
            code=ErrorCode.LEASE_HELD,
            status=current.status,
            lease_owner=current.lease_owner,
        )
    return current  # its generator died: crash recovery has it already


def claim_message(db: Session, message_id: uuid.UUID, data: ClaimRequest, *, lease_seconds: float) -> Message:
    """Take the right to generate an answer: a pending or failed one, or one whose lease has expired.

    Claiming again while holding a live lease renews it (a heartbeat) and is not a new attempt.
    """
    now = utcnow()
    expires = now + timedelta(seconds=data.lease_seconds or lease_seconds)
    live = and_(Message.status == Status.IN_PROGRESS, Message.lease_expires_at > _at(now))
    renewal = and_(live, Message.lease_owner == data.owner)
    claimable = or_(
        Message.status.in_([Status.PENDING, Status.FAILED]),
        and_(Message.status == Status.IN_PROGRESS, ~live),
        renewal,
    )
    message = db.scalar(
        update(Message)
        .where(Message.id == message_id, Message.role == MessageRole.ASSISTANT, claimable)
        .values(
            status=Status.IN_PROGRESS,
            lease_owner=data.owner,
            lease_expires_at=_at(expires),
            attempts=case((renewal, Message.attempts), else_=Message.attempts + 1),
            error=case((renewal, Message.error), else_=None),
            version=Message.version + 1,
            updated_at=_at(now),
        )
        .returning(Message)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    if message is not None:
        return message
    current = get_message(db, message_id)
    if current.role != MessageRole.ASSISTANT:
        raise Conflict("only assistant messages are generated, so only they can be claimed", role=current.role)
    if current.status == Status.COMPLETE:
        raise Conflict("the message is already complete", status=current.status)
    raise Conflict(
        f"the message is being generated by {current.lease_owner!r}",
        code=ErrorCode.LEASE_HELD,
        status=current.status,
        lease_owner=current.lease_owner,
        lease_expires_at=current.lease_expires_at.isoformat() if current.lease_expires_at else None,
    )


def list_stale(db: Session, limit: int, owner: str | None = None) -> list[Message]:
    """In-progress answers whose lease expired: their generator died and they need recovering. With ``owner``,
    also those it holds, expired or not: a gateway restarted under the same name takes its own back at once."""
    orphaned = Message.lease_expires_at < _at(utcnow())
    if owner is not None:
        orphaned = or_(orphaned, Message.lease_owner == owner)
    stmt = (
        select(Message)
        # Not the prompts: every gateway scans for these every few seconds, and a claim returns the prompt.
        .options(defer(Message.prompt, raiseload=True))
        .where(Message.status == _IN_PROGRESS_SQL, orphaned)
        .order_by(Message.lease_expires_at)
        .limit(limit)
    )
    return list(db.scalars(stmt))
