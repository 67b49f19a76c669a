import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from persistence.api.params import Cursor, Limit
from persistence.deps import IfMatchDep, SessionDep, SettingsDep
from persistence.models import Message
from persistence.schemas import (
    AppendRequest,
    AppendResult,
    ClaimRequest,
    MessageCreate,
    MessageRead,
    MessageUpdate,
    Page,
)
from persistence.services import messages
from shared import MessageRole, MessageStatus

router = APIRouter(tags=["messages"])


def _with_etag(message: Message, response: Response) -> MessageRead:
    response.headers["ETag"] = f'"{message.version}"'
    return MessageRead.model_validate(message)


@router.post("/sessions/{session_id}/messages", status_code=201)
def create_message(session_id: uuid.UUID, body: MessageCreate, db: SessionDep, response: Response) -> MessageRead:
    """Add a message; repeating a create with the same id and body returns the stored one (200)."""
    message, created = messages.create_message(db, session_id, body)
    if not created:
        response.status_code = 200
    return _with_etag(message, response)


@router.get("/sessions/{session_id}/messages")
def list_messages(
    session_id: uuid.UUID,
    db: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: MessageStatus | None = None,
    order: Literal["asc", "desc"] = "asc",
) -> Page[MessageRead]:
    """List a session's messages in the order they were written (or newest first with order=desc)."""
    rows, next_cursor = messages.list_messages(
        db, session_id, limit=limit, cursor=cursor, status=status, newest_first=order == "desc"
    )
    return Page[MessageRead](items=[MessageRead.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.get("/sessions/{session_id}/messages/last")
def last_message(
    session_id: uuid.UUID, db: SessionDep, response: Response, role: MessageRole | None = None
) -> MessageRead:
    """Get a session's newest message, optionally of one role."""
    return _with_etag(messages.last_message(db, session_id, role), response)


@router.get("/messages/stale")
def list_stale_messages(db: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[MessageRead]:
    """List in-progress answers whose lease expired (their generator died)."""
    return [MessageRead.model_validate(row) for row in messages.list_stale(db, limit)]


@router.get("/messages/{message_id}")
def get_message(message_id: uuid.UUID, db: SessionDep, response: Response) -> MessageRead:
    """Get one message; its version is also in the ETag header."""
    return _with_etag(messages.get_message(db, message_id), response)


@router.patch("/messages/{message_id}")
def update_message(
    message_id: uuid.UUID,
    body: MessageUpdate,
    db: SessionDep,
    settings: SettingsDep,
    if_match: IfMatchDep,
    response: Response,
) -> MessageRead:
    """Update a message's status, error, rating, model, finish reason, usage or content."""
    message = messages.update_message(db, message_id, body, if_match=if_match, lease_seconds=settings.lease_seconds)
    return _with_etag(message, response)


@router.post("/messages/{message_id}/append")
def append_to_message(
    message_id: uuid.UUID, body: AppendRequest, db: SessionDep, settings: SettingsDep
) -> AppendResult:
    """Append partial text at an offset that must equal the current length (409 otherwise)."""
    row = messages.append_text(db, message_id, body, lease_seconds=settings.lease_seconds)
    return AppendResult.model_validate(row)


@router.post("/messages/{message_id}/claim")
def claim_message(
    message_id: uuid.UUID, body: ClaimRequest, db: SessionDep, settings: SettingsDep, response: Response
) -> MessageRead:
    """Take the lease to generate an answer; 409 while another owner holds a live lease."""
    message = messages.claim_message(db, message_id, body, lease_seconds=settings.lease_seconds)
    return _with_etag(message, response)
