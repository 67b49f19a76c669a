import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Response
from fastapi.responses import PlainTextResponse

from persistence.api.params import NO_NUL, Cursor, Limit, favorite_value, replayed
from persistence.deps import DbDep, OnBehalfOfDep, OwnerCheck
from persistence.schemas import ImportResult, SessionExport
from persistence.services import sessions, transfer
from shared import Page, SessionRead
from shared.contract import FavoriteSet, SessionCreate, SessionRename, SessionUpdate

# Every route with a session id answers only for the session's user when asked on behalf of one.
router = APIRouter(prefix="/sessions", tags=["sessions"], dependencies=[OwnerCheck])


@router.post("", status_code=201, responses={200: replayed(SessionRead)})
async def create_session(body: SessionCreate, db: DbDep, response: Response) -> SessionRead:
    """Start a chat session; repeating a create with the same id returns the stored one (200)."""
    stored = await db.run(sessions.create_session, body)
    if not stored.created:
        response.status_code = 200
    return stored.item


@router.post("/import", status_code=201)
async def import_session(body: SessionExport, db: DbDep) -> ImportResult:
    """Import a session document made by export; ids are kept, or replaced when taken."""
    return await db.run(transfer.import_session, body)


@router.get("")
async def list_sessions(
    db: DbDep,
    on_behalf_of: OnBehalfOfDep,
    user_id: Annotated[str | None, Query(max_length=255, pattern=NO_NUL)] = None,
    favorite: bool | None = None,
    q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL, description="Text in the title.")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[SessionRead]:
    """List sessions, favorites first, then newest activity first."""
    return await db.run_autocommit(
        sessions.list_sessions,
        limit=limit,
        user_id=on_behalf_of if on_behalf_of is not None else user_id,
        favorite=favorite,
        q=q,
        cursor=cursor,
    )


@router.get("/{session_id}")
async def get_session(session_id: uuid.UUID, db: DbDep) -> SessionRead:
    """Get one session."""
    return await db.run_autocommit(sessions.get_session, session_id)


@router.get(
    "/{session_id}/export",
    response_model=SessionExport,
    responses={200: {"content": {"text/markdown": {}}, "description": "The document, as JSON or Markdown."}},
)
async def export_session(
    session_id: uuid.UUID, db: DbDep, format: Literal["json", "md"] = "json"
) -> SessionExport | PlainTextResponse:
    """Export a session with all its messages: a versioned JSON document, or readable Markdown."""
    document = await db.run(transfer.export_session, session_id)
    if format == "md":
        return PlainTextResponse(transfer.to_markdown(document), media_type="text/markdown; charset=utf-8")
    return document


@router.patch("/{session_id}")
async def update_session(session_id: uuid.UUID, body: SessionUpdate, db: DbDep) -> SessionRead:
    """Change a session's title, favorite flag or metadata."""
    return await db.run(sessions.update_session, session_id, body)


@router.put("/{session_id}")
async def rename_session(session_id: uuid.UUID, body: SessionRename, db: DbDep) -> SessionRead:
    """Rename a session."""
    return await db.run(sessions.update_session, session_id, SessionUpdate(title=body.title))


@router.patch("/{session_id}/favorite")
async def favorite_session(
    session_id: uuid.UUID,
    db: DbDep,
    is_favorite: Annotated[bool | None, Query(description="Set the flag to this value instead of toggling it.")] = None,
    body: Annotated[FavoriteSet | None, Body()] = None,
) -> SessionRead:
    """Toggle the favorite flag, or set it with ?is_favorite= or {"is_favorite": bool}."""
    value = favorite_value(is_favorite, body.is_favorite if body is not None else None)
    return await db.run_autocommit(sessions.set_favorite, session_id, value)


@router.delete("/{session_id}", status_code=204)
async def delete_session(session_id: uuid.UUID, db: DbDep) -> Response:
    """Delete a session and all its messages."""
    await db.run_autocommit(sessions.delete_session, session_id)
    return Response(status_code=204)
