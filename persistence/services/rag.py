"""The RAG chat-storage API: its pages (offset and total) over our sessions and messages, one storage, one set
of rules. Every query lives with its resource (services/sessions.py, services/messages.py, services/answers.py);
here they are read as that API names them."""

import uuid

from sqlalchemy.orm import Session

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
from shared import NotFound
from shared.contract import SessionCreate, SessionUpdate


def create_session(db: Session, data: RagSessionCreate) -> RagSession:
    return RagSession.of(sessions._create_session(db, SessionCreate(user_id=data.user_id, title=data.name)).item)


def get_session(db: Session, session_id: uuid.UUID) -> RagSession:
    return RagSession.of(sessions._get_session(db, session_id))


def rename_session(db: Session, session_id: uuid.UUID, name: str) -> RagSession:
    return RagSession.of(sessions._update_session(db, session_id, SessionUpdate(title=name)))


def set_favorite(db: Session, session_id: uuid.UUID, is_favorite: bool | None) -> RagSession:
    return RagSession.of(sessions._set_favorite(db, session_id, is_favorite))


def list_sessions(db: Session, user_id: str | None, skip: int, limit: int) -> RagSessionList:
    """A page of sessions (favorites first, then newest activity), and how many there are in all."""
    rows = sessions._sessions_from(db, user_id=user_id, skip=skip, limit=limit)
    return RagSessionList(
        sessions=[RagSession.of(row) for row in rows], total=sessions.count_sessions(db, user_id=user_id)
    )


def create_message(db: Session, session_id: uuid.UUID, data: RagMessageCreate) -> RagMessage:
    return RagMessage.of(messages._store_message(db, session_id, data.to_message()).item)


def list_messages(db: Session, session_id: uuid.UUID, skip: int, limit: int) -> RagMessageList:
    """A page of a session's messages, oldest first, and how many it has in all."""
    if not sessions.session_exists(db, session_id):
        raise NotFound(f"session {session_id} not found")
    rows = messages._messages_from(db, session_id, skip=skip, limit=limit)
    return RagMessageList(messages=[RagMessage.of(row) for row in rows], total=messages.count_messages(db, session_id))


def resume_session(db: Session, session_id: uuid.UUID) -> RagResumed:
    """Hand the session's last answer, pending or failed, to the gateways (see ``answers``)."""
    answer = answers._hand_over_last_answer(db, session_id)
    return RagResumed(message=RagMessage.of(answer), status=answer.status)
