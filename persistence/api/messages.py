import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response

from persistence.api.params import NO_NUL, Cursor, Limit, replayed
from persistence.deps import DbDep, IfMatchDep, IfNoneMatchDep, OnBehalfOfDep, OwnerCheck, SettingsDep
from persistence.services import answers, conversations, messages, turns
from shared import MessageRead, MessageRole, MessageStatus, Page
from shared.contract import (
    AppendRequest,
    AppendResult,
    ClaimRequest,
    ConversationFind,
    ConversationFound,
    MessageCreate,
    MessageDetail,
    MessageText,
    MessageUpdate,
    TurnCreate,
    TurnRead,
)
from shared.resources import MAX_OFFSET

router = APIRouter(tags=["messages"])

# Routes are matched in order, one by one: the busiest come first.


def _etag(version: int) -> str:
    """A message's version as its entity tag (what If-Match and If-None-Match name)."""
    return f'"{version}"'


def _with_etag(message: MessageDetail, response: Response) -> MessageDetail:
    """One message, as every route that answers with one message returns it: with its version as its ETag."""
    response.headers["ETag"] = _etag(message.version)
    return message


def _not_modified(version: int, if_none_match: frozenset[str]) -> Response | None:
    """A 304 when If-None-Match names the message's version: whoever polls an answer being generated
    elsewhere mostly finds it unchanged, and then no body is sent."""
    if "*" in if_none_match or str(version) in if_none_match:
        return Response(status_code=304, headers={"ETag": _etag(version)})
    return None


NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "The message is still at a version given in If-None-Match."}
}


@router.post("/messages/{message_id}/append")
async def append_to_message(
    message_id: uuid.UUID, body: AppendRequest, db: DbDep, settings: SettingsDep
) -> AppendResult:
    """Append partial text at an offset that must equal the current length (409 otherwise)."""
    # The last append ends the answer and settles its usage, one naming its model may begin a part: both or
    # neither, in one transaction.
    run = db.run if body.finish is not None or body.model is not None else db.run_autocommit
    return await run(answers.append_text, message_id, body, lease_seconds=settings.lease_seconds)


@router.post(
    "/sessions/{session_id}/messages",
    status_code=201,
    responses={200: replayed(MessageDetail)},
    dependencies=[OwnerCheck],
)
async def create_message(session_id: uuid.UUID, body: MessageCreate, db: DbDep, response: Response) -> MessageDetail:
    """Add a message; repeating a create with the same id and body returns the stored one (200)."""
    stored = await db.run_autocommit(messages.create_message, session_id, body)
    if not stored.created:
        response.status_code = 200
    return _with_etag(stored.item, response)


@router.post(
    "/sessions/{session_id}/turns", status_code=201, responses={200: replayed(TurnRead)}, dependencies=[OwnerCheck]
)
async def start_turn(
    session_id: uuid.UUID, body: TurnCreate, db: DbDep, settings: SettingsDep, response: Response
) -> TurnRead:
    """Store a question and its answer at once, the answer claimed if an owner is given; a replay is a 200."""
    # Budgets are checked and the turn stored in one transaction; without, a single statement needs none.
    run = db.run if body.account is not None and body.account.has_budget else db.run_autocommit
    stored = await run(turns.start_turn, session_id, body, lease_seconds=settings.lease_seconds)
    if not stored.created:
        response.status_code = 200
    return stored.item


@router.post("/conversations/find", responses={404: {"description": "No session holds it."}})
async def find_conversation(body: ConversationFind, db: DbDep, on_behalf_of: OnBehalfOfDep) -> ConversationFound:
    """Find the session an OpenAI client's resent conversation goes on in, by the key of its last answer."""
    if on_behalf_of is not None:
        body = body.model_copy(update={"user_id": on_behalf_of})
    return await db.run_autocommit(conversations.find_conversation, body)


@router.get("/sessions/{session_id}/messages", dependencies=[OwnerCheck])
async def list_messages(
    session_id: uuid.UUID,
    db: DbDep,
    limit: Limit = 50,
    cursor: Cursor = None,
    status: MessageStatus | None = None,
    order: Literal["asc", "desc"] = "asc",
) -> Page[MessageRead]:
    """List a session's messages in the order they were written (or newest first with order=desc)."""
    return await db.run_autocommit(
        messages.list_messages, session_id, limit=limit, cursor=cursor, status=status, newest_first=order == "desc"
    )


@router.get("/sessions/{session_id}/messages/last", dependencies=[OwnerCheck])
async def last_message(
    session_id: uuid.UUID, db: DbDep, response: Response, role: MessageRole | None = None
) -> MessageDetail:
    """Get a session's newest message, optionally of one role."""
    return _with_etag(await db.run_autocommit(messages.last_message, session_id, role), response)


@router.get("/messages/stale")
async def list_stale_messages(
    db: DbDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    owner: Annotated[
        str | None, Query(min_length=1, max_length=255, pattern=NO_NUL, description="Also the ones it holds.")
    ] = None,
) -> list[MessageRead]:
    """List in-progress answers whose lease expired (their generator died), and those ``owner`` holds."""
    return await db.run_autocommit(answers.list_stale, limit, owner)


@router.get("/messages/{message_id}", response_model=MessageDetail, responses=NOT_MODIFIED, dependencies=[OwnerCheck])
async def get_message(
    message_id: uuid.UUID, db: DbDep, response: Response, if_none_match: IfNoneMatchDep
) -> MessageDetail | Response:
    """Get one message, with its prompt if it has one; its version is the ETag (If-None-Match gives a 304)."""
    message = await db.run_autocommit(messages.get_message, message_id)
    return _not_modified(message.version, if_none_match) or _with_etag(message, response)


@router.get(
    "/messages/{message_id}/text", response_model=MessageText, responses=NOT_MODIFIED, dependencies=[OwnerCheck]
)
async def get_message_text(
    message_id: uuid.UUID,
    db: DbDep,
    response: Response,
    if_none_match: IfNoneMatchDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> MessageText | Response:
    """Get a message's text from an offset on, with its status: how an answer is followed as it grows."""
    text = await db.run_autocommit(messages.read_text, message_id, offset)
    if (not_modified := _not_modified(text.version, if_none_match)) is not None:
        return not_modified
    response.headers["ETag"] = _etag(text.version)
    return text


@router.delete("/messages/{message_id}", status_code=204, dependencies=[OwnerCheck])
async def delete_message(message_id: uuid.UUID, db: DbDep) -> Response:
    """Delete one message; an answer being generated stops at its next write."""
    await db.run(messages.delete_message, message_id)
    return Response(status_code=204)


@router.patch("/messages/{message_id}", dependencies=[OwnerCheck])
async def update_message(
    message_id: uuid.UUID,
    body: MessageUpdate,
    db: DbDep,
    settings: SettingsDep,
    if_match: IfMatchDep,
    response: Response,
) -> MessageDetail:
    """Update a message's status, error, rating, model, finish reason, usage or content."""
    message = await db.run(
        messages.update_message, message_id, body, if_match=if_match, lease_seconds=settings.lease_seconds
    )
    return _with_etag(message, response)


@router.post("/messages/{message_id}/claim")
async def claim_message(
    message_id: uuid.UUID,
    body: ClaimRequest,
    db: DbDep,
    settings: SettingsDep,
    if_match: IfMatchDep,
    response: Response,
) -> MessageDetail:
    """Take the lease to generate an answer (returned with its prompt); 409 while another owner holds a live lease.
    With If-Match, only while the answer is still at that version (412 otherwise)."""
    message = await db.run_autocommit(
        answers.claim_message, message_id, body, if_match=if_match, lease_seconds=settings.lease_seconds
    )
    return _with_etag(message, response)
