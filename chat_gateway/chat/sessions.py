"""Sessions and search for gateway clients (the terminal client among them), relayed to persistence."""

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response

from chat_gateway.chat.protocol import GenerationOptions, validated
from chat_gateway.deps import CallerDep, PersistenceDep
from shared import JSONObject, MessageRead, Page, SearchHit, SessionRead
from shared.contract import FavoriteSet, SessionRename

router = APIRouter(prefix="/chat", tags=["sessions"])

# Persistence validates every value again; these bounds only keep nonsense from travelling.
Limit = Annotated[int, Query(ge=1, le=200)]


def _given(**params: Any) -> dict[str, Any]:
    """The query parameters the client gave: persistence applies its own defaults to the rest. An empty
    ``user_id`` is passed on (it matches no one), never dropped, which would list every user's sessions."""
    return {name: value for name, value in params.items() if value is not None}


@router.get("/search")
async def search(
    caller: CallerDep,
    persistence: PersistenceDep,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    user_id: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[SearchHit]:
    """Search complete messages and session titles: most relevant first, with highlighted snippets."""
    params = _given(q=q, limit=limit, user_id=caller.acting_for(user_id), cursor=cursor)
    return await persistence.sessions.search(params, caller.scope())


@router.get("/sessions")
async def list_sessions(
    caller: CallerDep,
    persistence: PersistenceDep,
    user_id: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[SessionRead]:
    """List sessions (your own; an admin's, everyone's or one user's), favorites first, then newest first."""
    params = _given(limit=limit, user_id=caller.acting_for(user_id), cursor=cursor)
    return await persistence.sessions.list(params, caller.scope())


def check_imported_options(document: JSONObject) -> None:
    """An imported answer's options are what a resume sends upstream: only the generation options a chat takes."""
    messages = document.get("messages")
    for position, message in enumerate(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("options") is not None:
            validated(GenerationOptions, message["options"], f"messages.{position}.options")


@router.post("/sessions/import", status_code=201)
async def import_session(
    caller: CallerDep, persistence: PersistenceDep, document: Annotated[JSONObject, Body()]
) -> JSONObject:
    """Import a session exported by GET /chat/sessions/{id}/export?format=json: it becomes the caller's."""
    check_imported_options(document)
    if caller.user_id is not None and isinstance(session := document.get("session"), dict):
        # A copy of one's own, with ids of its own: kept ids would tell whether another user's exist.
        session["user_id"], session["id"] = caller.user_id, str(uuid.uuid4())
        for message in document.get("messages") or []:
            if isinstance(message, dict):
                message["id"] = str(uuid.uuid4())
    return await persistence.sessions.import_(document)


@router.get("/sessions/{session_id}")
async def get_session(session_id: uuid.UUID, caller: CallerDep, persistence: PersistenceDep) -> SessionRead:
    """Get one session."""
    return await persistence.sessions.get(session_id, caller.scope())


@router.get("/sessions/{session_id}/messages")
async def list_messages(
    session_id: uuid.UUID,
    caller: CallerDep,
    persistence: PersistenceDep,
    limit: Limit = 200,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[MessageRead]:
    """A session's messages, oldest first."""
    return await persistence.messages.list(session_id, _given(limit=limit, cursor=cursor), caller.scope())


@router.get("/messages/{message_id}", response_model=MessageRead)
async def get_message(message_id: uuid.UUID, caller: CallerDep, persistence: PersistenceDep) -> MessageRead:
    """Get one message: an answer's status and its text as stored so far."""
    return await persistence.messages.get(message_id, caller.scope())


@router.put("/sessions/{session_id}")
async def rename_session(
    session_id: uuid.UUID,
    caller: CallerDep,
    persistence: PersistenceDep,
    body: SessionRename,
) -> SessionRead:
    """Rename a session."""
    return await persistence.sessions.rename(session_id, body, caller.scope())


@router.patch("/sessions/{session_id}/favorite")
async def favorite_session(
    session_id: uuid.UUID,
    caller: CallerDep,
    persistence: PersistenceDep,
    is_favorite: Annotated[bool | None, Query(description="Set the flag to this value instead of toggling it.")] = None,
    body: Annotated[FavoriteSet | None, Body()] = None,
) -> SessionRead:
    """Toggle the favorite flag, or set it with ?is_favorite= or {"is_favorite": bool}."""
    # Persistence applies the one rule (query or body; both, differing, a 400).
    return await persistence.sessions.favorite(session_id, _given(is_favorite=is_favorite), body, caller.scope())


@router.delete("/sessions/{session_id}", status_code=204)
async def delete_session(session_id: uuid.UUID, caller: CallerDep, persistence: PersistenceDep) -> Response:
    """Delete a session and its messages."""
    await persistence.sessions.delete(session_id, caller.scope())
    return Response(status_code=204)


@router.get(
    "/sessions/{session_id}/export", responses={200: {"content": {"text/markdown": {}, "application/json": {}}}}
)
async def export_session(
    session_id: uuid.UUID, caller: CallerDep, persistence: PersistenceDep, format: Literal["json", "md"] = "json"
) -> Response:
    """Export a session as a versioned JSON document or as Markdown."""
    exported = await persistence.sessions.export(session_id, format, caller.scope())
    return Response(exported.content, media_type=exported.headers.get("content-type"))
