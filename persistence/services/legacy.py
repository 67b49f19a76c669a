"""The original message API (chat_id, human/ai roles), kept working on top of sessions and messages."""

import uuid

from sqlalchemy.orm import Session

from persistence.schemas import LegacyMessageCreate, LegacyMessageRead, LegacyMessageUpdate
from persistence.services import messages, sessions
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
        sessions._create_session(db, SessionCreate(id=chat_id, user_id=LEGACY_USER, title=title))


def create_message(db: Session, data: LegacyMessageCreate) -> LegacyMessageRead:
    _ensure_session(db, data.chat_id, data.content)
    role = _ROLES[data.role]
    stored = messages._store_message(
        db,
        data.chat_id,
        MessageCreate(
            role=role, content=data.content, status=MessageStatus.COMPLETE, rating=data.rating, sent_at=data.sent_at
        ),
        legacy_role=data.role if data.role != role else None,
    )
    return LegacyMessageRead.of(stored.item)


def update_message(db: Session, message_id: uuid.UUID, data: LegacyMessageUpdate) -> LegacyMessageRead:
    return LegacyMessageRead.of(messages._edit_message(db, message_id, data.changes()))


def list_messages(db: Session, chat_id: uuid.UUID | None, limit: int) -> list[LegacyMessageRead]:
    """The newest ``limit`` messages of the chat, or of every chat, oldest first (an unknown chat has none)."""
    return [LegacyMessageRead.of(row) for row in messages._newest_messages(db, limit, chat_id)]
