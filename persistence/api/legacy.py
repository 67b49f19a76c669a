"""The original message API, unchanged for its existing clients."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from persistence.deps import DbDep
from persistence.schemas import LegacyMessageCreate, LegacyMessageRead, LegacyMessageUpdate
from persistence.services import legacy

router = APIRouter(prefix="/messages", tags=["original message API"])


# GET /messages/ without a chat answers with this many of the newest messages of every chat, at most.
LIST_DEFAULT = 1000
LIST_MAX = 10_000


@router.post("/")
async def create_message(body: LegacyMessageCreate, db: DbDep) -> LegacyMessageRead:
    """Store a message of a chat (original API); the chat's session is created on first use."""
    return await db.run(legacy.create_message, body)


@router.put("/{message_id}")
async def update_message(message_id: uuid.UUID, body: LegacyMessageUpdate, db: DbDep) -> LegacyMessageRead:
    """Change a message's content and/or rating (original API)."""
    return await db.run(legacy.update_message, message_id, body)


@router.get("/")
async def list_messages(
    db: DbDep,
    chat_id: uuid.UUID | None = None,
    limit: Annotated[
        int, Query(ge=1, le=LIST_MAX, description=f"How many of the newest messages (at most {LIST_MAX}).")
    ] = LIST_DEFAULT,
) -> list[LegacyMessageRead]:
    """List the newest messages of a chat, or of every chat, oldest first (original API)."""
    return await db.run_autocommit(legacy.list_messages, chat_id, limit)
