"""The statements that store a turn: its messages in one INSERT, and on PostgreSQL everything a new answer's turn
writes (its session, its messages, its usage record) in one statement, one round trip before the first word.
"""

import functools
from typing import Any

from pydantic_core import to_json
from sqlalchemy import (
    CTE,
    CompoundSelect,
    Insert,
    Select,
    Text,
    bindparam,
    cast,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from persistence.models import ChatSession, Message
from persistence.services import usage
from persistence.services.message_rows import TABLE
from persistence.services.sessions import open_session_statement
from shared import MessageRole

_SESSIONS = ChatSession.__table__


@functools.cache
def turn_statement(dialect: str, inputs: int, *, opens_session: bool, exclusive: bool = False) -> Insert:
    """A turn's messages in one INSERT, so all are stored or none and no transaction is needed.

    With ``opens_session`` (PostgreSQL) the session is created in the same statement, in a CTE: one round
    trip and one commit instead of two before the first word of an answer. With ``exclusive``, only into a
    session the statement created or its user's own, and the ids stored are returned (none: refused).
    """
    rows = turn_rows(dialect, inputs)
    if not opens_session:
        return insert(TABLE).from_select(list(TABLE.c), rows)
    if not exclusive:
        return insert(TABLE).from_select(list(TABLE.c), rows).add_cte(open_session_statement(dialect).cte("opened"))
    opened = open_session_statement(dialect).returning(_SESSIONS.c.id).cte("opened")
    stmt = insert(TABLE).from_select(list(TABLE.c), select(rows.subquery()).where(_own(opened))).add_cte(opened)
    return stmt.returning(TABLE.c.id)  # what was stored: nothing, when refused


@functools.cache
def whole_turn_statement(*, opens_session: bool, exclusive: bool, unless_added: bool) -> Select[Any]:
    """On PostgreSQL, a turn as one statement: its session opened (``opens_session``), its messages stored and
    its answer's usage recorded (``usage.record_statement``), each in a CTE, so all are stored or none; it
    returns the ids stored.

    With ``unless_added`` (a turn that ``follows_added``), nothing is stored when a message of the user's that its
    client added under the answer's key exists (``added_key``, ``added_user_id``): the turn may belong after it
    (``conversations.whole_conversation``), which its caller then looks for. Without such a message, the lookup
    would find nothing: the turn needs no statement of its own for it, and the first word waits on one round trip.
    """
    wanted: list[ColumnElement[bool]] = []
    if unless_added:
        added = exists(
            select(Message.id)
            .join(ChatSession, ChatSession.id == Message.session_id)
            .where(
                Message.conversation_key == bindparam("added_key"),
                ChatSession.user_id == bindparam("added_user_id"),
                Message.role != MessageRole.ASSISTANT,
            )
        )
        wanted.append(~added)
    opened = None
    if opens_session:
        opened = open_session_statement("postgresql", where=tuple(wanted)).returning(_SESSIONS.c.id).cte("opened")
        if exclusive:
            wanted.append(_own(opened))
    rows = _json_rows().where(*wanted)
    stored = insert(TABLE).from_select(list(TABLE.c), rows).returning(TABLE.c.id).cte("stored")
    answer = select(stored.c.id).where(stored.c.id == bindparam("record_message_id"))
    recorded = usage.record_statement("postgresql", exists(answer)).cte("recorded")
    stmt = select(stored.c.id).add_cte(recorded)
    return stmt if opened is None else stmt.add_cte(opened)


def _own(opened: CTE) -> ColumnElement[bool]:
    """Only into a session this turn opened or its user's own: a session id taken by another user stores nothing
    (the same statement cannot see the CTE's row in the table, hence both tests)."""
    return or_(
        exists(select(opened.c.id)),
        exists(
            select(_SESSIONS.c.id).where(
                _SESSIONS.c.id == bindparam("session_id"), _SESSIONS.c.user_id == bindparam("session_user_id")
            )
        ),
    )


def turn_rows(dialect: str, count: int) -> Select[Any] | CompoundSelect[Any]:
    """The turn's rows as a SELECT of every column, from ``turn_rows_params``.

    On PostgreSQL, all of them are one JSON parameter, turned into rows of the table's type by
    jsonb_populate_recordset: a statement of a few parameters and one text, whatever the number of rows.
    psycopg parses a statement anew on every execution, before the first word of every answer, once it has more
    than 50 parameters or 4,096 bytes (MAX_CACHED_STATEMENT_PARAMS and _LENGTH); a question's turn as one
    parameter per column had 63. SQLite (whose driver caches statements by their text alone) gets them as
    SELECT ... UNION ALL SELECT ..., one parameter per column, rows r0, r1...: a multi-row VALUES would be
    compiled anew for every request.
    """
    if dialect == "postgresql":
        return _json_rows()
    rows = [
        select(*(bindparam(f"r{row}_{column.name}", type_=column.type) for column in TABLE.c))
        for row in range(count + 1)
    ]
    return union_all(*rows)


def _json_rows() -> Select[Any]:
    given = cast(bindparam("turn_rows", type_=Text()), JSONB)
    records = func.jsonb_populate_recordset(literal_column(f"NULL::{TABLE.name}"), given)
    # Its columns by name, not a column list, which would rename them in the table's order in the database.
    source = records.table_valued(*(column.name for column in TABLE.c)).alias("turn")
    return select(*(source.c[column.name] for column in TABLE.c))


def turn_rows_params(dialect: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    if dialect == "postgresql":  # ids and times as the ISO text PostgreSQL reads into their columns
        return {"turn_rows": to_json(rows).decode()}
    return {f"r{row}_{name}": value for row, values in enumerate(rows) for name, value in values.items()}
