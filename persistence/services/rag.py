"""The RAG chat-storage API: its pages (offset and total) over our sessions and messages, one storage, one set
of rules. Its offset pages, which only it reads, are its own queries; every other one lives with its resource
(sessions.py, messages.py, answers.py), read here as that API names them."""

import uuid
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from persistence.db import as_dicts
from persistence.models import ChatSession
from persistence.schemas import (
    RagMessage,
    RagMessageCreate,
    RagMessageList,
    RagResumed,
    RagSession,
    RagSessionCreate,
    RagSessionList,
)
from persistence.services import answers, messages, sessions
from persistence.services.message_rows import CHRONOLOGICAL, LISTED, TABLE
from shared import NotFound
from shared.contract import SessionCreate, SessionUpdate

_SESSIONS = ChatSession.metadata.tables[ChatSession.__tablename__]


def create_session(db: Session, data: RagSessionCreate) -> RagSession:
    return RagSession.of(sessions.create_session_row(db, SessionCreate(user_id=data.user_id, title=data.name)).item)


def get_session(db: Session, session_id: uuid.UUID) -> RagSession:
    return RagSession.of(sessions.get_session_row(db, session_id))


def rename_session(db: Session, session_id: uuid.UUID, name: str) -> RagSession:
    return RagSession.of(sessions.update_session_row(db, session_id, SessionUpdate(title=name)))


def set_favorite(db: Session, session_id: uuid.UUID, is_favorite: bool | None) -> RagSession:
    return RagSession.of(sessions.set_favorite_row(db, session_id, is_favorite))


def list_sessions(db: Session, user_id: str | None, skip: int, limit: int) -> RagSessionList:
    """A page of sessions (favorites first, then newest activity), and how many there are in all."""
    rows = _sessions_from(db, user_id=user_id, skip=skip, limit=limit)
    return RagSessionList(sessions=[RagSession.of(row) for row in rows], total=_count_sessions(db, user_id=user_id))


def create_message(db: Session, session_id: uuid.UUID, data: RagMessageCreate) -> RagMessage:
    return RagMessage.of(messages.create_message_row(db, session_id, data.to_message()).item)


def list_messages(db: Session, session_id: uuid.UUID, skip: int, limit: int) -> RagMessageList:
    """A page of a session's messages, oldest first, and how many it has in all."""
    if not sessions.session_exists(db, session_id):
        raise NotFound(f"session {session_id} not found")
    rows = _messages_from(db, session_id, skip=skip, limit=limit)
    return RagMessageList(messages=[RagMessage.of(row) for row in rows], total=_count_messages(db, session_id))


def resume_session(db: Session, session_id: uuid.UUID) -> RagResumed:
    """Hand the session's last answer, pending or failed, to the gateways (see ``answers``)."""
    answer = answers.hand_over_last_answer(db, session_id)
    return RagResumed(message=RagMessage.of(answer), status=answer.status)


def _user_sessions(user_id: str | None) -> Select[Any]:
    stmt = select(*_SESSIONS.c)
    return stmt if user_id is None else stmt.where(_SESSIONS.c.user_id == user_id)


def _sessions_from(db: Session, *, user_id: str | None, skip: int, limit: int) -> list[dict[str, Any]]:
    """Sessions in the order of ``sessions.list_sessions``, from the ``skip``-th on (offset pages)."""
    key = (_SESSIONS.c.is_favorite.desc(), _SESSIONS.c.updated_at.desc(), _SESSIONS.c.id.desc())
    return as_dicts(db.execute(_user_sessions(user_id).order_by(*key).offset(skip).limit(limit)))


def _count_sessions(db: Session, *, user_id: str | None) -> int:
    return db.scalar(select(func.count()).select_from(_user_sessions(user_id).subquery())) or 0


def _messages_from(db: Session, session_id: uuid.UUID, *, skip: int, limit: int) -> list[dict[str, Any]]:
    """A session's messages in the order they were written, from the ``skip``-th on (offset pages)."""
    key = (TABLE.c[column.key] for column in CHRONOLOGICAL)
    stmt = select(*LISTED).where(TABLE.c.session_id == session_id).order_by(*key).offset(skip).limit(limit)
    return as_dicts(db.execute(stmt))


def _count_messages(db: Session, session_id: uuid.UUID) -> int:
    return db.scalar(select(func.count()).select_from(TABLE).where(TABLE.c.session_id == session_id)) or 0
