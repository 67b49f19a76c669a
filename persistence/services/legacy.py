"""The original message API (chat_id, human/ai roles), kept working on top of sessions and messages. The queries
only it makes are here; the rest are the message API's own (messages.py, message_rows.py, sessions.py)."""

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from persistence.db import as_dicts
from persistence.schemas import LegacyMessageCreate, LegacyMessageRead, LegacyMessageUpdate
from persistence.services import messages, sessions
from persistence.services.message_rows import CHRONOLOGICAL, LISTED, TABLE, apply_changes, lock_message_row
from shared import MessageRole, MessageStatus
from shared.contract import MessageCreate, SessionCreate
from shared.identity import LEGACY_USER

_ROLES = {
    "human": MessageRole.USER,
    "ai": MessageRole.ASSISTANT,
    "user": MessageRole.USER,
    "assistant": MessageRole.ASSISTANT,
}


def _ensure_session(db: Session, chat_id: uuid.UUID, first_message: str) -> None:
    if not sessions.session_exists(db, chat_id):
        title = " ".join(first_message.split())[:80] or "New chat"
        sessions.create_session_row(db, SessionCreate(id=chat_id, user_id=LEGACY_USER, title=title))


def create_message(db: Session, data: LegacyMessageCreate) -> LegacyMessageRead:
    _ensure_session(db, data.chat_id, data.content)
    role = _ROLES[data.role]
    stored = messages.create_message_row(
        db,
        data.chat_id,
        MessageCreate(
            role=role, content=data.content, status=MessageStatus.COMPLETE, rating=data.rating, sent_at=data.sent_at
        ),
        legacy_role=data.role if data.role != role else None,
    )
    return LegacyMessageRead.of(stored.item)


def update_message(db: Session, message_id: uuid.UUID, data: LegacyMessageUpdate) -> LegacyMessageRead:
    """An edit by the original message API: content and rating, whatever the status."""
    return LegacyMessageRead.of(apply_changes(db, lock_message_row(db, message_id), data.changes()))


def list_messages(db: Session, chat_id: uuid.UUID | None, limit: int) -> list[LegacyMessageRead]:
    """The newest ``limit`` messages of the chat, or of every chat, oldest first (an unknown chat has none)."""
    return [LegacyMessageRead.of(row) for row in _newest_messages(db, limit, chat_id)]


def _newest_messages(db: Session, limit: int, session_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` messages of a session, or of every session, oldest first (one index seek)."""
    stmt = select(*LISTED)
    if session_id is not None:
        stmt = stmt.where(TABLE.c.session_id == session_id)
    stmt = stmt.order_by(*(TABLE.c[column.key].desc() for column in CHRONOLOGICAL)).limit(limit)
    return as_dicts(db.execute(stmt))[::-1]
