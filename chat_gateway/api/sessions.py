"""Sessions and search for gateway clients (the terminal client among them), relayed to persistence."""

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response

from chat_gateway.deps import PersistenceDep
from shared import MessageRead, Page, SearchHit, SessionRead

router = APIRouter(prefix="/chat", tags=["sessions"])

# Persistence validates every value again; these bounds only keep nonsense from travelling.
Limit = Annotated[int, Query(ge=1, le=200)]


def _given(**params: Any) -> dict[str, Any]:
    """The query parameters the client gave: persistence applies its own defaults to the rest. An empty
    ``user_id`` is passed on (it matches no one), never dropped, which would list every user's sessions."""
    return {name: value for name, value in params.items() if value is not None}


@router.get("/search")
async def search(
    persistence: PersistenceDep,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    user_id: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[SearchHit]:
    """Search complete messages and session titles: most relevant first, with highlighted snippets."""
    return await persistence.search(_given(q=q, limit=limit, user_id=user_id, cursor=cursor))


@router.get("/sessions")
async def list_sessions(
    persistence: PersistenceDep,
    user_id: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[SessionRead]:
    """List sessions, favorites first, then newest activity first."""
    return await persistence.list_sessions(_given(limit=limit, user_id=user_id, cursor=cursor))


@router.get("/sessions/{session_id}/messages")
async def list_messages(
    session_id: uuid.UUID,
    persistence: PersistenceDep,
    limit: Limit = 200,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Page[MessageRead]:
    """A session's messages, oldest first."""
    return await persistence.list_messages(session_id, _given(limit=limit, cursor=cursor))


@router.put("/sessions/{session_id}")
async def rename_session(
    session_id: uuid.UUID,
    persistence: PersistenceDep,
    title: Annotated[str, Body(embed=True, min_length=1, max_length=500)],
) -> SessionRead:
    """Rename a session."""
    return await persistence.rename_session(session_id, title)


@router.patch("/sessions/{session_id}/favorite")
async def favorite_session(
    session_id: uuid.UUID,
    persistence: PersistenceDep,
    is_favorite: Annotated[bool | None, Query(description="Set the flag to this value instead of toggling it.")] = None,
    body: Annotated[bool | None, Body(embed=True, alias="is_favorite")] = None,
) -> SessionRead:
    """Toggle the favorite flag, or set it with ?is_favorite= or {"is_favorite": bool}."""
    # Persistence applies the one rule (query or body; both, differing, a 400).
    return await persistence.favorite_session(
        session_id, _given(is_favorite=is_favorite), None if body is None else {"is_favorite": body}
    )


@router.delete("/sessions/{session_id}", status_code=204)
async def delete_session(session_id: uuid.UUID, persistence: PersistenceDep) -> Response:
    """Delete a session and its messages."""
    await persistence.delete_session(session_id)
    return Response(status_code=204)


@router.get(
    "/sessions/{session_id}/export", responses={200: {"content": {"text/markdown": {}, "application/json": {}}}}
)
async def export_session(
    session_id: uuid.UUID, persistence: PersistenceDep, format: Literal["json", "md"] = "json"
) -> Response:
    """Export a session as a versioned JSON document or as Markdown."""
    exported = await persistence.export_session(session_id, format)
    return Response(exported.content, media_type=exported.headers.get("content-type"))
