"""The original message API, unchanged for its existing clients."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from persistence.deps import DbDep
from persistence.schemas import LegacyMessageCreate, LegacyMessageRead, LegacyMessageUpdate
from persistence.services import legacy

router = APIRouter(prefix="/messages", tags=["original message API"])


@router.post("/")
async def create_message(body: LegacyMessageCreate, db: DbDep) -> LegacyMessageRead:
    """Store a message of a chat (original API); the chat's session is created on first use."""
    return LegacyMessageRead.model_validate(await db.run(legacy.create_message, body))


@router.put("/{message_id}")
async def update_message(message_id: uuid.UUID, body: LegacyMessageUpdate, db: DbDep) -> LegacyMessageRead:
    """Change a message's content and/or rating (original API)."""
    return LegacyMessageRead.model_validate(await db.run(legacy.update_message, message_id, body))


@router.get("/")
async def list_messages(
    chat_id: uuid.UUID, db: DbDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[LegacyMessageRead]:
    """List a chat's messages, newest first (original API)."""
    rows = await db.run_autocommit(legacy.list_messages, chat_id, limit)
    return [LegacyMessageRead.model_validate(row) for row in rows]
