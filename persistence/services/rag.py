"""The RAG chat-storage API: its pages (offset and total) over our sessions and messages, one storage, one set
of rules. Every query lives with its resource (services/sessions.py, services/messages.py)."""

import uuid
from typing import Any

from sqlalchemy.orm import Session

from persistence.models import Message
from persistence.schemas import RagMessageCreate
from persistence.services import messages, sessions
from shared import NotFound


def list_sessions(db: Session, user_id: str | None, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """A page of sessions (favorites first, then newest activity), and how many there are in all."""
    rows = sessions.list_sessions_from(db, user_id=user_id, skip=skip, limit=limit)
    return rows, sessions.count_sessions(db, user_id=user_id)


def list_messages(db: Session, session_id: uuid.UUID, skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
    """A page of a session's messages, oldest first, and how many it has in all."""
    if not sessions.session_exists(db, session_id):
        raise NotFound(f"session {session_id} not found")
    rows = messages.list_messages_from(db, session_id, skip=skip, limit=limit)
    return rows, messages.count_messages(db, session_id)


def create_message(db: Session, session_id: uuid.UUID, data: RagMessageCreate) -> Message:
    message, _ = messages.create_message(db, session_id, data.to_message())
    return message
