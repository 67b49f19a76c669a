from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import APIKeyHeader

from persistence.config import Settings
from persistence.db import Database
from shared import BadRequest, Unauthorized, key_matches

# Every dependency and route is `async def`: FastAPI runs a plain `def` in the thread pool, and each such
# hop cost more CPU than the query it wraps (docs/benchmarks.md). Database.run is the one hop a request makes.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


DbDep = Annotated[Database, Depends(get_database)]

_api_key_header = APIKeyHeader(
    name="x-api-key", auto_error=False, description="One of the keys in API_KEY / API_KEY_FILE."
)


async def require_api_key(settings: SettingsDep, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    if not key_matches(key, settings.api_keys):
        raise Unauthorized("missing or invalid x-api-key header")


ApiKeyDep = Depends(require_api_key)


async def if_match_version(
    if_match: Annotated[str | None, Header(description="A version (or ETag) the message must still have.")] = None,
) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise BadRequest('If-Match must be a message version, such as "3"')
    return int(tag)


IfMatchDep = Annotated[int | None, Depends(if_match_version)]
