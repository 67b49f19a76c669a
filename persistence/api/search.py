from typing import Annotated

from fastapi import APIRouter, Query

from persistence.api.params import NO_NUL, Cursor, Limit
from persistence.deps import DbDep, OnBehalfOfDep
from persistence.services import search as search_service
from shared import Page, SearchHit

router = APIRouter(tags=["search"])


@router.get("/search")
async def search(
    db: DbDep,
    on_behalf_of: OnBehalfOfDep,
    q: Annotated[str, Query(min_length=1, max_length=200, pattern=NO_NUL, description="Words to find (all of them).")],
    user_id: Annotated[str | None, Query(max_length=255, pattern=NO_NUL)] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Page[SearchHit]:
    """Search complete messages and session titles: most relevant first, with highlighted snippets."""
    return await db.run_autocommit(
        search_service.search,
        q,
        limit=limit,
        user_id=on_behalf_of if on_behalf_of is not None else user_id,
        cursor=cursor,
    )
