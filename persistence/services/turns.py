"""Turns: a question and its answer stored together, the answer claimed, before the answer is generated.

One INSERT stores both (and, on PostgreSQL, opens the session in the same statement): the first word of an
answer waits on one round trip.
"""

import contextlib
import functools
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Insert,
    bindparam,
    cast,
    exists,
    insert,
    or_,
    select,
    union_all,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from persistence.models import ChatSession, Message, utcnow
from persistence.services import Stored, usage
from persistence.services.messages import (
    _TABLE,
    Status,
    _new_row,
    _same_request,
)
from persistence.services.sessions import _open_session_params, _open_session_statement, session_exists
from persistence.services.sessions import owner_of as session_owner
from shared import (
    Conflict,
    ErrorCode,
    MessageRead,
    MessageRole,
    NotFound,
)
from shared.contract import TurnCreate, TurnRead


def start_turn(db: Session, session_id: uuid.UUID, data: TurnCreate, *, lease_seconds: float) -> Stored[TurnRead]:
    """Store a question and its answer with one INSERT, the answer claimed by ``data.owner`` when given.

    A replay of a stored turn is not created: it returns the turn as it is now (its answer may have grown),
    without claiming it. Runs outside a transaction: the session, when created here, stays even if the
    messages turn out to conflict. A turn with token budgets runs in one. A turn that opens a session is
    refused (404) when the session is another user's.
    """
    now = utcnow()
    dialect = db.get_bind().dialect.name
    params: dict[str, Any] = {}
    if data.session is not None:
        params = _open_session_params(session_id, data.session.user_id, data.session.title, now)
        if dialect != "postgresql":  # SQLite has no INSERT inside WITH: the session goes first, on its own
            opened = db.execute(_open_session_statement(dialect), params).rowcount  # type: ignore[attr-defined]
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
    # Read from the values inserted, which are the whole rows: no reload, and no ORM objects to build.
    return Stored(_turn(question, answer), created=True)


def _turn(question: dict[str, Any] | Message, answer: dict[str, Any] | Message) -> TurnRead:
    return TurnRead(question=MessageRead.model_validate(question), answer=MessageRead.model_validate(answer))


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
            .add_cte(_open_session_statement(dialect).cte("opened"))
        )
    opened = _open_session_statement(dialect).returning(sessions.c.id).cte("opened")
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
) -> Stored[TurnRead]:
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
    return Stored(_turn(stored_question, stored_answer), created=False)
