from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from persistence.config import Settings
from shared import BadRequest, Unauthorized, key_matches


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_db(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back when it raises."""
    with request.app.state.sessionmaker.begin() as session:
        yield session


# scope="function": the commit happens before the response is sent, so a client that reads
# right after a write always sees it.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]

_api_key_header = APIKeyHeader(
    name="x-api-key", auto_error=False, description="One of the keys in API_KEY / API_KEY_FILE."
)


def require_api_key(settings: SettingsDep, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    if not key_matches(key, settings.api_keys):
        raise Unauthorized("missing or invalid x-api-key header")


ApiKeyDep = Depends(require_api_key)


def if_match_version(
    if_match: Annotated[str | None, Header(description="A version (or ETag) the message must still have.")] = None,
) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise BadRequest('If-Match must be a message version, such as "3"')
    return int(tag)


IfMatchDep = Annotated[int | None, Depends(if_match_version)]
