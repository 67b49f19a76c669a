"""Chat sessions: every query on the sessions table lives here, but for the RAG API's offset pages (rag.py).

The ``..._row`` functions return the ORM object, for the other services that build on them (rag.py, legacy.py,
transfer.py); ``open_session_*`` are the statement a turn opens its session with (turns.py,
turn_statements.py)."""

import functools
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, Select, bindparam, delete, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from persistence.db import as_dicts, insert_on_conflict
from persistence.models import ChatSession
from persistence.pagination import decode_cursor, keyset_page
from persistence.services import Stored, usage
from shared import NotFound, Page, SessionRead
from shared.contract import SessionCreate, SessionUpdate

_TABLE = ChatSession.metadata.tables[ChatSession.__tablename__]


def create_session(db: Session, data: SessionCreate) -> Stored[SessionRead]:
    """Store a session; not created when its client-chosen id already exists (the stored one is returned)."""
    return create_session_row(db, data).map(SessionRead.model_validate)


def create_session_row(db: Session, data: SessionCreate) -> Stored[ChatSession]:
    if data.id is not None:
        try:
            with db.begin_nested():  # a retry may race the original create
                chat = _insert_session(db, data, data.id)
        except IntegrityError:
            return Stored(get_session_row(db, data.id), created=False)
        return Stored(chat, created=True)
    return Stored(_insert_session(db, data, uuid.uuid4()), created=True)


def _insert_session(db: Session, data: SessionCreate, session_id: uuid.UUID) -> ChatSession:
    chat = ChatSession(
        id=session_id,
        user_id=data.user_id,
        title=data.title,
        is_favorite=data.is_favorite,
        metadata_=data.metadata,
    )
    db.add(chat)
    db.flush()
    return chat


def get_session(db: Session, session_id: uuid.UUID) -> SessionRead:
    return SessionRead.model_validate(get_session_row(db, session_id))


def get_session_row(db: Session, session_id: uuid.UUID) -> ChatSession:
    chat = db.get(ChatSession, session_id)
    if chat is None:
        raise NotFound(f"session {session_id} not found")
    return chat


def owner_of(db: Session, session_id: uuid.UUID) -> str | None:
    """The session's user, None when there is no such session."""
    return db.scalar(select(ChatSession.user_id).where(ChatSession.id == session_id))


def session_exists(db: Session, session_id: uuid.UUID) -> bool:
    return db.scalar(select(ChatSession.id).where(ChatSession.id == session_id)) is not None


@functools.cache
def _list_statement(*, by_user: bool, by_favorite: bool, by_title: bool, after_cursor: bool) -> Select[Any]:
    """The query of a page of sessions, built once per shape (with bound parameters)."""
    stmt = select(*_TABLE.c)
    if by_user:
        stmt = stmt.where(_TABLE.c.user_id == bindparam("user_id"))
    if by_favorite:
        stmt = stmt.where(_TABLE.c.is_favorite == bindparam("favorite"))
    if by_title:
        stmt = stmt.where(_TABLE.c.title.ilike(bindparam("pattern"), escape="\\"))
    key = (_TABLE.c.is_favorite, _TABLE.c.updated_at, _TABLE.c.id)
    if after_cursor:
        after = (
            bindparam("after_favorite", type_=_TABLE.c.is_favorite.type),
            bindparam("after_updated_at", type_=_TABLE.c.updated_at.type),
            bindparam("after_id", type_=_TABLE.c.id.type),
        )
        stmt = stmt.where(tuple_(*key) < tuple_(*after))
    return stmt.order_by(*(column.desc() for column in key)).limit(bindparam("limit"))


def list_sessions(
    db: Session,
    *,
    limit: int,
    user_id: str | None = None,
    favorite: bool | None = None,
    q: str | None = None,
    cursor: str | None = None,
) -> Page[SessionRead]:
    """Favorites first, then newest activity first; validated from dicts of every column (as pages of
    messages are, for speed)."""
    params: dict[str, Any] = {"user_id": user_id, "favorite": favorite, "limit": limit + 1}
    if q:
        params["pattern"] = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    if cursor is not None:
        params["after_favorite"], params["after_updated_at"], params["after_id"] = decode_cursor(
            cursor, bool, datetime, uuid.UUID
        )
    stmt = _list_statement(
        by_user=user_id is not None, by_favorite=favorite is not None, by_title=bool(q), after_cursor=cursor is not None
    )
    rows = as_dicts(db.execute(stmt, params))
    return keyset_page(Page[SessionRead], rows, limit, "is_favorite", "updated_at", "id")


def update_session(db: Session, session_id: uuid.UUID, data: SessionUpdate) -> SessionRead:
    return SessionRead.model_validate(update_session_row(db, session_id, data))


def update_session_row(db: Session, session_id: uuid.UUID, data: SessionUpdate) -> ChatSession:
    chat = get_session_row(db, session_id)
    for name, value in data.changes().items():
        setattr(chat, "metadata_" if name == "metadata" else name, value)
    db.flush()
    return chat


def set_favorite(db: Session, session_id: uuid.UUID, is_favorite: bool | None) -> SessionRead:
    return SessionRead.model_validate(set_favorite_row(db, session_id, is_favorite))


def set_favorite_row(db: Session, session_id: uuid.UUID, is_favorite: bool | None) -> ChatSession:
    """Set the flag, or toggle it when no value is given (atomically, so two toggles cancel out)."""
    value = ~ChatSession.is_favorite if is_favorite is None else is_favorite
    chat = db.scalar(
        update(ChatSession)
        .where(ChatSession.id == session_id)
        .values(is_favorite=value)
        .returning(ChatSession)
        .execution_options(populate_existing=True)
    )
    if chat is None:
        raise NotFound(f"session {session_id} not found")
    return chat


@functools.cache
def open_session_statement(dialect: str, where: tuple[ColumnElement[bool], ...] = ()) -> Insert:
    """Create a session unless its id exists (its messages mark the activity, see migration 0003), and only
    when ``where`` holds.

    Parameters from ``open_session_params``.
    """
    columns = ("id", "user_id", "title", "is_favorite", "metadata", "created_at", "updated_at")
    values = [bindparam(f"session_{name}", type_=_TABLE.c[name].type) for name in columns]
    stmt = insert_on_conflict(dialect, _TABLE)
    if where:
        stmt = stmt.from_select(columns, select(*values).where(*where))
    else:
        stmt = stmt.values(dict(zip(columns, values, strict=True)))
    return stmt.on_conflict_do_nothing(index_elements=[_TABLE.c.id])


def open_session_params(session_id: uuid.UUID, user_id: str, title: str, now: datetime) -> dict[str, Any]:
    values = {"id": session_id, "user_id": user_id, "title": title, "is_favorite": False, "metadata": None}
    return {f"session_{name}": value for name, value in (values | {"created_at": now, "updated_at": now}).items()}


def delete_session(db: Session, session_id: uuid.UUID) -> None:
    usage.release_session(db, session_id)
    result = db.execute(delete(ChatSession).where(ChatSession.id == session_id))
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise NotFound(f"session {session_id} not found")
