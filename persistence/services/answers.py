"""The life of an answer, every way it moves: offset-checked appends, its end, claims and leases, the hand-over
of a session's last answer, the scan for orphans, and its status changed by hand (a PATCH).

``TRANSITIONS``: its statuses, and what moves it from one to the next ("by hand": ``set_status_by_hand``)::

    pending      -> in_progress  claimed (a turn with an owner stores its answer claimed), or handed over
                 -> failed       by hand (cancelled, given up)
    in_progress  -> complete     its last append (``finish``), or by hand
                 -> failed       its last append (its generation failed), or by hand (cancelled)
                 -> pending      by hand
    failed       -> in_progress  claimed again, or handed over: resumed from its saved text
                 -> pending      by hand
    complete     -> nothing: it is final, only its rating changes

A claim takes an answer in a status that may go in progress (``CLAIMABLE``), or one in progress whose lease is
over, or its own (a renewal, not a move). Appends and claims are single conditional UPDATEs, so they are atomic
on SQLite and PostgreSQL alike: of two concurrent requests racing for the same row, exactly one matches its
condition.
"""

import functools
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Update,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, defer
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

from persistence.models import Message, UTCDateTime, utcnow
from persistence.services import answer_parts, usage
from persistence.services.message_rows import TABLE, at, get_message_row, last_message_row, not_found, tool_columns
from shared import (
    Conflict,
    DomainError,
    ErrorCode,
    MessageRead,
    MessageRole,
    NotFound,
    OffsetMismatch,
    PreconditionFailed,
)
from shared import MessageStatus as Status
from shared.contract import AppendRequest, AppendResult, ClaimRequest, MessageDetail
from shared.resources import ToolFields

TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.IN_PROGRESS, Status.FAILED}),
    Status.IN_PROGRESS: frozenset({Status.COMPLETE, Status.FAILED, Status.PENDING}),
    Status.FAILED: frozenset({Status.IN_PROGRESS, Status.PENDING}),
    Status.COMPLETE: frozenset(),
}

# What a claim or a hand-over takes (pending, failed): every status that may go in progress. A tuple in the
# table's order, so a statement's parameters come in the same order in every process (a set's would not).
CLAIMABLE = tuple(status for status, following in TRANSITIONS.items() if Status.IN_PROGRESS in following)

# A literal (not a bound parameter) so the planner can use the partial index ix_messages_stale.
_IN_PROGRESS_SQL: ColumnClause[str] = literal_column("'in_progress'")


def set_status_by_hand(message: Message, status: Status, lease_seconds: float) -> None:
    """Move a locked message to another ``status``, as a PATCH asks (``messages.update_message``): a 409 unless
    ``TRANSITIONS`` allows it. Nobody holds it afterwards."""
    if status not in TRANSITIONS[message.status]:
        raise Conflict(
            f"a message cannot go from {message.status} to {status}",
            status=message.status,
            code=ErrorCode.ILLEGAL_TRANSITION,
        )
    message.lease_owner = None
    # Set in progress by hand rather than claimed: nobody owns it, but crash recovery must still find it.
    in_progress = status == Status.IN_PROGRESS
    message.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds) if in_progress else None


@functools.cache
def _append_statement(*, by_owner: bool, finish: frozenset[str], by_model: bool = False) -> Update:
    """The conditional UPDATE of an append, built once per shape (with bound parameters)."""
    table = TABLE
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
    returning: tuple[ColumnElement[Any], ...] = (
        table.c.id,
        length,
        table.c.version,
        table.c.status,
        table.c.lease_expires_at,
    )
    if by_model:  # what a new part is told from: the parts so far, and the model of the first
        returning += (table.c.model, table.c.answer_parts)
    return update(table).where(*conditions).values(values).returning(*returning)


def append_text(db: Session, message_id: uuid.UUID, data: AppendRequest, *, lease_seconds: float) -> AppendResult:
    """Append ``data.text`` at ``data.offset``, which must be the current length: a retried append is a 409.

    One that names its model begins a new part when that model did not write the last one: in a transaction
    (the append and its part, or neither), and, refused when retried, never twice."""
    now = utcnow()
    finish = _finish_columns(data)
    parts = data.finish.parts if data.finish is not None else None
    params = {
        "message_id": message_id,
        "offset": data.offset,
        "owner": data.owner,
        "text": data.text,
        "now": now,
        "expires": now + timedelta(seconds=data.lease_seconds or lease_seconds),
    } | {f"finish_{name}": value for name, value in finish.items()}
    by_model = data.model is not None and parts is None
    stmt = _append_statement(by_owner=data.owner is not None, finish=frozenset(finish), by_model=by_model)
    row = db.execute(stmt, params).one_or_none()
    if row is None:
        raise _refusal_of_append(db, message_id, data)
    if by_model and data.model is not None:  # (by_model says so; mypy cannot tell)
        new_parts, model = answer_parts.after_append(row.answer_parts, row.model, data.model, data.offset)
        if (new_parts, model) != (row.answer_parts, row.model):
            _set_parts(db, message_id, new_parts, model)
        if model != row.model:
            usage.rename(db, message_id, model)
    if parts is not None:
        usage.settle_parts(db, message_id, parts, row.length)
    elif finish:
        usage.settle(db, message_id, finish.get("usage"), row.length)
    return AppendResult.model_validate(row)


def _finish_columns(data: AppendRequest) -> dict[str, Any]:
    """The columns an append's ``finish`` writes, as the append statement binds them."""
    if data.finish is None:
        return {}
    finish = data.finish.model_dump(exclude_unset=True, exclude={"parts"})
    if data.finish.tool_calls:
        calls = tool_columns(ToolFields(tool_calls=data.finish.tool_calls))
        finish |= {"tool_calls": calls["tool_calls"], "tool_names": calls["tool_names"]}
    if data.finish.parts is not None:
        finish["answer_parts"] = [part.model_dump(mode="json") for part in data.finish.parts]
    return finish


def _set_parts(db: Session, message_id: uuid.UUID, parts: list[dict[str, Any]] | None, model: str | None) -> None:
    # The append's UPDATE holds the row until the transaction ends: nobody changed the parts in between.
    db.execute(update(TABLE).where(TABLE.c.id == message_id).values(answer_parts=parts, model=model))


def _refusal_of_append(db: Session, message_id: uuid.UUID, data: AppendRequest) -> DomainError:
    """Why an append matched no row, as the error to raise."""
    row = db.execute(
        select(Message.status, func.length(Message.content), Message.lease_owner).where(Message.id == message_id)
    ).one_or_none()
    if row is None:
        return not_found(message_id)
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
        answer = last_message_row(db, session_id, MessageRole.ASSISTANT)
    except NotFound as exc:
        if exc.code != "no_message":
            raise
        raise Conflict("the session has no answer to resume", code=ErrorCode.NOTHING_TO_RESUME) from exc
    now = utcnow()
    handed = db.scalar(
        update(Message)
        .where(Message.id == answer.id, Message.status.in_(CLAIMABLE))
        .values(
            status=Status.IN_PROGRESS,
            lease_owner=None,
            lease_expires_at=at(now),
            version=Message.version + 1,
            updated_at=at(now),
        )
        .returning(Message)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    if handed is not None:
        return handed
    current = db.scalar(select(Message).where(Message.id == answer.id).execution_options(populate_existing=True))
    if current is None:
        raise not_found(answer.id)
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


def claim_message(
    db: Session, message_id: uuid.UUID, data: ClaimRequest, *, if_match: int | None = None, lease_seconds: float
) -> MessageDetail:
    """Take the right to generate an answer: a pending or failed one, or one whose lease has expired.

    Claiming again while holding a live lease renews it (a heartbeat) and is not a new attempt. With
    ``if_match``, only the answer as its claimer saw it (that version): one seen in progress by a scan for
    orphans, and cancelled since, is not generated again (PreconditionFailed).
    """
    now = utcnow()
    expires = now + timedelta(seconds=data.lease_seconds or lease_seconds)
    live = and_(Message.status == Status.IN_PROGRESS, Message.lease_expires_at > at(now))
    renewal = and_(live, Message.lease_owner == data.owner)
    renews = db.scalar(select(renewal).where(Message.id == message_id))
    claimable = or_(
        Message.status.in_(CLAIMABLE),
        and_(Message.status == Status.IN_PROGRESS, ~live),
        renewal,
    )
    conditions = [Message.id == message_id, Message.role == MessageRole.ASSISTANT, claimable]
    if if_match is not None:
        conditions.append(Message.version == if_match)
    message = db.scalar(
        update(Message)
        .where(*conditions)
        .values(
            status=Status.IN_PROGRESS,
            lease_owner=data.owner,
            lease_expires_at=at(expires),
            attempts=case((renewal, Message.attempts), else_=Message.attempts + 1),
            error=case((renewal, Message.error), else_=None),
            version=Message.version + 1,
            updated_at=at(now),
        )
        .returning(Message)
        .execution_options(populate_existing=True, synchronize_session=False)
    )
    if message is not None:
        if not renews:  # a new run, however it was started: its tokens are counted
            usage.open_run(db, message_id, now)
        return MessageDetail.model_validate(message)
    raise _refusal_of_claim(db, message_id, if_match)


def _refusal_of_claim(db: Session, message_id: uuid.UUID, if_match: int | None) -> DomainError:
    """Why a claim matched no row, as the error to raise."""
    current = get_message_row(db, message_id)
    if if_match is not None and current.version != if_match:
        return PreconditionFailed(f"message is at version {current.version}, not {if_match}", version=current.version)
    if current.role != MessageRole.ASSISTANT:
        return Conflict("only assistant messages are generated, so only they can be claimed", role=current.role)
    if current.status == Status.COMPLETE:
        return Conflict("the message is already complete", status=current.status)
    return Conflict(
        f"the message is being generated by {current.lease_owner!r}",
        code=ErrorCode.LEASE_HELD,
        status=current.status,
        lease_owner=current.lease_owner,
        lease_expires_at=current.lease_expires_at.isoformat() if current.lease_expires_at else None,
    )


def list_stale(db: Session, limit: int, owner: str | None = None) -> list[MessageRead]:
    """In-progress answers whose lease expired: their generator died and they need recovering. With ``owner``,
    also those it holds, expired or not: a gateway restarted under the same name takes its own back at once."""
    orphaned = Message.lease_expires_at < at(utcnow())
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
    return [MessageRead.model_validate(message) for message in db.scalars(stmt)]
