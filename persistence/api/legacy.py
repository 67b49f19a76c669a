"""The original message API, unchanged for its existing clients."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from persistence.deps import SessionDep
from persistence.schemas import LegacyMessageCreate, LegacyMessageRead, LegacyMessageUpdate
from persistence.services import legacy

router = APIRouter(prefix="/messages", tags=["original message API"])


@router.post("/")
def create_message(body: LegacyMessageCreate, db: SessionDep) -> LegacyMessageRead:
    """Store a message of a chat (original API); the chat's session is created on first use."""
    return LegacyMessageRead.model_validate(legacy.create_message(db, body))


@router.put("/{message_id}")
def update_message(message_id: uuid.UUID, body: LegacyMessageUpdate, db: SessionDep) -> LegacyMessageRead:
    """Change a message's content and/or rating (original API)."""
    return LegacyMessageRead.model_validate(legacy.update_message(db, message_id, body))


@router.get("/")
def list_messages(
    chat_id: uuid.UUID, db: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[LegacyMessageRead]:
    """List a chat's messages, newest first (original API)."""
    return [LegacyMessageRead.model_validate(row) for row in legacy.list_messages(db, chat_id, limit)]
