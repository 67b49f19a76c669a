"""The RAG chat-storage API (`/api/v1`, `Authorization: Bearer <key>`), served on our own sessions and messages."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from persistence.api.health import check_database
from persistence.api.params import NO_NUL
from persistence.deps import DbDep
from persistence.schemas import (
    RagMessage,
    RagMessageCreate,
    RagMessageList,
    RagResumed,
    RagSession,
    RagSessionCreate,
    RagSessionList,
    RagSessionRename,
)
from persistence.services import rag, sessions
from shared.contract import Health

router = APIRouter(prefix="/api/v1", tags=["RAG chat-storage API"])

Skip = Annotated[int, Query(ge=0, le=1_000_000_000, description="How many to leave out, from the first.")]
PageSize = Annotated[int, Query(ge=1, le=1000, description="Page size (at most 1000).")]


@router.post("/sessions", status_code=201)
async def create_session(body: RagSessionCreate, db: DbDep) -> RagSession:
    """Create a chat session for a user (named "New chat" unless a name is given)."""
    return await db.run(rag.create_session, body)


@router.get("/sessions")
async def list_sessions(
    db: DbDep,
    user_id: Annotated[str | None, Query(max_length=255, pattern=NO_NUL)] = None,
    skip: Skip = 0,
    limit: PageSize = 100,
) -> RagSessionList:
    """List a user's sessions, favorites first, then newest activity first, with their total."""
    return await db.run(rag.list_sessions, user_id, skip, limit)


@router.get("/sessions/{session_id}")
async def get_session(session_id: uuid.UUID, db: DbDep) -> RagSession:
    """Get one session."""
    return await db.run_autocommit(rag.get_session, session_id)


@router.put("/sessions/{session_id}")
async def rename_session(session_id: uuid.UUID, body: RagSessionRename, db: DbDep) -> RagSession:
    """Rename a session."""
    return await db.run(rag.rename_session, session_id, body.name)


@router.patch("/sessions/{session_id}/favorite")
async def favorite_session(
    session_id: uuid.UUID,
    db: DbDep,
    is_favorite: Annotated[bool | None, Query(description="Set the flag to this value instead of toggling it.")] = None,
) -> RagSession:
    """Toggle a session's favorite flag, or set it with ?is_favorite=true|false."""
    return await db.run_autocommit(rag.set_favorite, session_id, is_favorite)


@router.delete("/sessions/{session_id}", status_code=204)
async def delete_session(session_id: uuid.UUID, db: DbDep) -> Response:
    """Delete a session and all its messages."""
    await db.run_autocommit(sessions.delete_session, session_id)
    return Response(status_code=204)


@router.post("/sessions/{session_id}/messages", status_code=201)
async def create_message(session_id: uuid.UUID, body: RagMessageCreate, db: DbDep) -> RagMessage:
    """Add a message to a session (an unfinished answer: status pending or failed, its text as partial_content)."""
    return await db.run_autocommit(rag.create_message, session_id, body)


@router.get("/sessions/{session_id}/messages")
async def list_messages(session_id: uuid.UUID, db: DbDep, skip: Skip = 0, limit: PageSize = 100) -> RagMessageList:
    """List a session's messages, oldest first, with their total."""
    return await db.run(rag.list_messages, session_id, skip, limit)


@router.post("/sessions/{session_id}/resume", status_code=202)
async def resume_session(session_id: uuid.UUID, db: DbDep) -> RagResumed:
    """Hand the session's last answer, pending or failed, to the gateways, which continue it from its saved text."""
    return await db.run_autocommit(rag.resume_session, session_id)


@router.get("/health", responses={503: {"description": "The database is unreachable."}})
async def health(db: DbDep) -> Health:
    """The service and its database answer."""
    await check_database(db)
    return Health(status="ok")
