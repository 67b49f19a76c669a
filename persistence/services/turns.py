"""Turns: what an answer answers (a question, or the results of the calls it made) and the answer, stored
together, the answer claimed, before the answer is generated.

One INSERT stores them all (and, on PostgreSQL, opens the session in the same statement): the first word of
an answer waits on one round trip. On PostgreSQL a turn without budgets is one statement whole
(turn_statements.py): its session, its messages, its usage record, and the check for inputs its client added
itself (``follows_added``), which sends it down the longer path below only when there are some.
"""

import contextlib
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from persistence.models import ChatSession, Message, utcnow
from persistence.services import Stored, usage
from persistence.services.conversations import whole_conversation
from persistence.services.message_rows import new_row, same_request, tool_columns
from persistence.services.sessions import open_session_params, open_session_statement, session_exists
from persistence.services.sessions import owner_of as session_owner
from persistence.services.turn_statements import turn_rows_params, turn_statement, whole_turn_statement
from shared import (
    CANCELLED,
    Conflict,
    ErrorCode,
    MessageRead,
    MessageRole,
    NotFound,
)
from shared import MessageStatus as Status
from shared.contract import TurnCreate, TurnRead


def start_turn(
    db: Session, session_id: uuid.UUID, data: TurnCreate, *, lease_seconds: float, _retrying: bool = False
) -> Stored[TurnRead]:
    """Store a turn's inputs and its answer with one INSERT, the answer claimed by ``data.owner`` when given.

    A replay of a stored turn is not created: it returns the turn as it is now (its answer may have grown),
    without claiming it. So is a turn whose ``request_key`` an answer has already (``_retried``): that answer's
    turn comes back. Runs outside a transaction: the session, when created here, stays even if the messages turn
    out to conflict. A turn with token budgets runs in one. A turn that opens a session is refused (404) when the
    session is another user's.
    """
    now = utcnow()
    budgeted = data.account is not None and data.account.has_budget
    # The same request again is its answer's, before any budget: its answer is paid for (it may have spent the
    # budget itself), and a record reserved for a turn never stored would count for nothing. Without budgets, the
    # INSERT finds it (the key is unique) at no cost to the turns that are new.
    if budgeted and data.answer.request_key is not None and (prior := _retried(db, data, now)) is not None:
        return Stored(_turn(_inputs_of(db, prior, len(data.inputs)), prior), created=False)
    if not budgeted and (whole := _in_one_statement(db, session_id, data, now, lease_seconds)):
        return whole
    dialect = db.get_bind().dialect.name
    session_id, data = _after_added(db, session_id, data)
    params, opened = _open_session(db, session_id, data, dialect, now)
    inputs, answer = _turn_rows(session_id, data, now, lease_seconds)
    params |= turn_rows_params(dialect, [*inputs, answer])
    opens_in_statement = dialect == "postgresql" and data.session is not None
    exclusive = data.session is not None and data.session.exclusive
    stmt = turn_statement(dialect, len(inputs), opens_session=opens_in_statement, exclusive=exclusive)
    if budgeted:  # checked first, under its user's lock: refused, nothing is stored
        assert data.account is not None
        usage.open_record(db, answer["id"], answer["model"], usage.with_history(db, data.account, session_id), now)
    try:
        # In a transaction (a budgeted turn), a failed INSERT must not abort it: a savepoint.
        with db.begin_nested() if budgeted else contextlib.nullcontext():
            result = db.execute(stmt, params)
    except IntegrityError:
        if (stored := _elsewhere(db, session_id, data, answer, now)) is not None:
            _undo_attempt(db, stored, session_id, answer["id"], budgeted=budgeted, opened=opened)
            return Stored(stored, created=False)
        if data.answer.request_key is not None and not _retrying and _key_holder(db, data) is None:
            # Its key was an answer's that completed too long ago (``_retried`` gave it up): once more, as new.
            return start_turn(db, session_id, data, lease_seconds=lease_seconds, _retrying=True)
        return _stored_turn(db, session_id, inputs, answer)
    if opens_in_statement and exclusive and not result.all():  # another user's session (see turn_statement)
        raise NotFound(f"session {session_id} not found")
    if data.account is not None and not budgeted:
        usage.open_record(db, answer["id"], answer["model"], data.account, now)
    # Read from the values inserted, which are the whole rows: no reload, and no ORM objects to build.
    return Stored(_turn(inputs, answer), created=True)


def _in_one_statement(
    db: Session, session_id: uuid.UUID, data: TurnCreate, now: datetime, lease_seconds: float
) -> Stored[TurnRead] | None:
    """A turn without budgets on PostgreSQL, new, in one statement (``whole_turn_statement``): its session, its
    messages and its usage record. None when it stored nothing: it may go after inputs its client added, its
    session is another user's, or its messages exist (a replay, a conflict); ``start_turn``'s statements tell which.
    Not on SQLite (no INSERT inside WITH), nor without an account (no usage to record: no statement to save).
    """
    if data.account is None or db.get_bind().dialect.name != "postgresql":
        return None
    inputs, answer = _turn_rows(session_id, data, now, lease_seconds)
    params = turn_rows_params("postgresql", [*inputs, answer])
    params |= usage.record_params(answer["id"], answer["model"], data.account, now)
    if data.session is not None:
        params |= open_session_params(session_id, data.session.user_id, data.session.title, now)
    if added := _added_under(data):
        params |= {"added_key": added[0], "added_user_id": added[1]}
    exclusive = data.session is not None and data.session.exclusive
    stmt = whole_turn_statement(
        opens_session=data.session is not None, exclusive=exclusive, unless_added=added is not None
    )
    try:
        stored = db.execute(stmt, params).all()
    except IntegrityError:
        return None
    return Stored(_turn(inputs, answer), created=True) if stored else None


def _added_under(data: TurnCreate) -> tuple[str, str] | None:
    """The key and the user a turn that ``follows_added`` looks for its inputs under, when it does."""
    if data.follows_added and data.account is not None and data.answer.conversation_key is not None:
        return data.answer.conversation_key, data.account.user_id
    return None


def _after_added(db: Session, session_id: uuid.UUID, data: TurnCreate) -> tuple[uuid.UUID, TurnCreate]:
    """Where the turn goes: the session it names, or, when its client added the inputs to a session itself and then
    asked for the answer (``follows_added``), after them."""
    if added := _added_under(data):
        holding = whole_conversation(db, *added)
        if holding is not None:
            return holding, data.model_copy(update={"session": None, "inputs": []})
    return session_id, data


def _open_session(
    db: Session, session_id: uuid.UUID, data: TurnCreate, dialect: str, now: datetime
) -> tuple[dict[str, Any], bool]:
    """The parameters that open the turn's session (none when it opens none), and whether a statement of its own
    opened it already: SQLite has no INSERT inside WITH, so there the session goes first, on its own."""
    if data.session is None:
        return {}, False
    params = open_session_params(session_id, data.session.user_id, data.session.title, now)
    if dialect == "postgresql":  # opened by the turn's own statement (``turn_statement``)
        return params, False
    opened = bool(db.execute(open_session_statement(dialect), params).rowcount)  # type: ignore[attr-defined]
    if not opened and data.session.exclusive and session_owner(db, session_id) != data.session.user_id:
        raise NotFound(f"session {session_id} not found")  # another user's, as if it did not exist
    return params, opened


def _undo_attempt(
    db: Session, stored: TurnRead, session_id: uuid.UUID, answer_id: uuid.UUID, *, budgeted: bool, opened: bool
) -> None:
    """Nothing of an attempt whose turn is stored elsewhere stays: its record (the INSERT that failed took its
    answer), and the session it opened on its own (on PostgreSQL, opened in the failed statement, it is gone with
    it)."""
    if budgeted and stored.answer.id != answer_id:
        usage.forget(db, answer_id)
    if opened and stored.answer.session_id != session_id:
        db.execute(delete(ChatSession).where(ChatSession.id == session_id))


# How long after it completed the same request again still gets an answer (TurnAnswer.retry_seconds).
RETRY_SECONDS = 60


def _retried(db: Session, data: TurnCreate, now: datetime) -> Message | None:
    """The answer of the request ``data`` repeats: the user's answer with its ``request_key`` that is being
    generated, that failed (to be resumed from its saved text), or that ended less than ``retry_seconds`` ago,
    complete or cancelled. One that ended earlier gives its key up to the new request: it is a new question."""
    stmt = select(Message).where(Message.request_key == data.answer.request_key)
    if data.account is not None:  # (the key hashes its owner already: this is only a second lock on that door)
        owner = select(ChatSession.user_id).where(ChatSession.id == Message.session_id).scalar_subquery()
        stmt = stmt.where(owner == data.account.user_id)
    prior = db.scalar(stmt)
    if prior is None:
        return None
    window = timedelta(seconds=RETRY_SECONDS if data.answer.retry_seconds is None else data.answer.retry_seconds)
    ended = prior.status == Status.COMPLETE or (prior.status == Status.FAILED and prior.error == CANCELLED)
    if ended and prior.updated_at < now - window:
        # Only that answer's key, and only as it was read: a concurrent request that took it since keeps it.
        release = update(Message).where(Message.id == prior.id, Message.request_key == data.answer.request_key)
        db.execute(release.values(request_key=None).execution_options(synchronize_session=False))
        return None
    return prior


def _key_holder(db: Session, data: TurnCreate) -> Message | None:
    return db.scalar(select(Message).where(Message.request_key == data.answer.request_key))


def _elsewhere(
    db: Session, session_id: uuid.UUID, data: TurnCreate, answer: dict[str, Any], now: datetime
) -> TurnRead | None:
    """After a turn's INSERT failed, the turn it is stored as already, when not where it asked to be: this very turn
    replayed after it went after the inputs its client had added (``follows_added``), or the same request stored
    before (its ``request_key``: ``_retried``, which gives up a key too old to retry)."""
    own = db.get(Message, answer["id"])
    asked = {"conversation_key": answer["conversation_key"], "options": answer["options"], "prompt": answer["prompt"]}
    redirected = own is not None and own.session_id != session_id and answer["conversation_key"] is not None
    if redirected and same_request(own, own.session_id if own else session_id, MessageRole.ASSISTANT, **asked):
        return _turn(_inputs_of(db, own, len(data.inputs)), own)
    if own is None and data.answer.request_key is not None and (prior := _retried(db, data, now)) is not None:
        return _turn(_inputs_of(db, prior, len(data.inputs)), prior)
    return None


def _inputs_of(db: Session, answer: Message, count: int) -> list[Message]:
    """The ``count`` messages an answer's turn stored before it: what it answers."""
    stmt = (
        select(Message)
        .where(Message.session_id == answer.session_id, Message.created_at < answer.created_at)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(count)
    )
    return list(db.scalars(stmt))[::-1]


def _turn_rows(
    session_id: uuid.UUID, data: TurnCreate, now: datetime, lease_seconds: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every column of the turn's inputs and of its answer (claimed by ``data.owner`` when given)."""
    # Sent when first tried, though stored at a retry's time (a gateway's recovery counts from it).
    sent = {"sent_at": min(data.sent_at, now)} if data.sent_at is not None else {}
    # A microsecond apart, so they sort in the order given, the answer last, whatever their ids.
    inputs = [
        new_row(
            session_id,
            given.id,
            now + timedelta(microseconds=position),
            role=given.role,
            content=given.content,
            context=given.context,
            status=Status.COMPLETE,
            **tool_columns(given),
            **sent,
        )
        for position, given in enumerate(data.inputs)
    ]
    claim: dict[str, Any] = {}
    if data.owner is not None:
        expires = now + timedelta(seconds=data.lease_seconds or lease_seconds)
        claim = {"status": Status.IN_PROGRESS, "lease_owner": data.owner, "lease_expires_at": expires, "attempts": 1}
    later = now + timedelta(microseconds=len(inputs))
    answer = (
        new_row(
            session_id,
            data.answer.id,
            later,
            role=MessageRole.ASSISTANT,
            status=Status.PENDING,
            model=data.answer.model,
            options=data.answer.options,
            prompt=data.answer.prompt,
            conversation_key=data.answer.conversation_key,
            request_key=data.answer.request_key,
            response=data.answer.response,
            **sent,
        )
        | claim
    )
    return inputs, answer


def _turn(inputs: Sequence[dict[str, Any] | Message], answer: dict[str, Any] | Message) -> TurnRead:
    return TurnRead(
        inputs=[MessageRead.model_validate(row) for row in inputs], answer=MessageRead.model_validate(answer)
    )


def _stored_turn(
    db: Session, session_id: uuid.UUID, inputs: list[dict[str, Any]], answer: dict[str, Any]
) -> Stored[TurnRead]:
    """After a turn's INSERT failed: a replay of the same turn, a conflict, or a session that does not exist."""
    stored_inputs = [db.get(Message, given["id"]) for given in inputs]
    stored_answer = db.get(Message, answer["id"])
    if stored_answer is None and all(stored is None for stored in stored_inputs):
        if not session_exists(db, session_id):
            raise NotFound(f"session {session_id} not found")
        raise Conflict("the turn's messages changed during the request: retry it", code=ErrorCode.RETRY)
    same_inputs = []
    for given, stored in zip(inputs, stored_inputs, strict=True):
        chosen = {name: given[name] for name in ("content", "context", "parts", "tool_call_id")}
        if not same_request(stored, session_id, given["role"], **chosen):
            raise Conflict(f"message {given['id']} already exists with a different body", code=ErrorCode.ID_CONFLICT)
        same_inputs.append(stored)
    # The model is left out: finishing an answer may record the one that actually answered.
    if not same_request(
        stored_answer, session_id, MessageRole.ASSISTANT, options=answer["options"], prompt=answer["prompt"]
    ):
        raise Conflict(
            f"message {answer['id']} already exists and is not this turn's answer", code=ErrorCode.ID_CONFLICT
        )
    return Stored(_turn(same_inputs, stored_answer), created=False)
