import uuid
from typing import Annotated
from urllib.parse import unquote

from fastapi import Depends, Header, Request, Security
from fastapi.requests import HTTPConnection
from fastapi.security import APIKeyHeader, HTTPBearer

from persistence.config import Settings
from persistence.db import Database
from persistence.services import messages, sessions
from shared import BadRequest, ErrorCode, NotFound, ServiceUnavailable, Unauthorized, key_matches, presented_key
from shared.identity import MAX_USER_ID, ON_BEHALF_OF, usable_user_id

# Every dependency and route is `async def`: FastAPI runs a plain `def` in the thread pool, and each such
# hop cost more CPU than the query it wraps (docs/benchmarks.md). Database.run is the one hop a request makes.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_database(request: Request) -> Database:
    if not request.app.state.database_ready:  # started before its database, and still waiting for it
        raise ServiceUnavailable("the database is not reachable yet: retry shortly", code=ErrorCode.NOT_READY)
    database: Database = request.app.state.database
    return database


DbDep = Annotated[Database, Depends(get_database)]


class _ApiKeyHeader(APIKeyHeader):
    """The key, in x-api-key or as a Bearer token: documented as a security scheme, and checked in the same step.

    One dependency rather than a checking function on top of the scheme: each level of dependencies
    costs every request measurable CPU (docs/benchmarks.md).
    """

    async def __call__(self, request: HTTPConnection) -> None:
        if not key_matches(presented_key(request.headers), request.app.state.settings.api_keys):
            raise Unauthorized(UNAUTHORIZED)


class _BearerDocumented(HTTPBearer):
    """``Authorization: Bearer <key>``, for the OpenAPI document (and Swagger's Authorize) only: the check
    above reads it."""

    async def __call__(self, request: Request) -> None:  # type: ignore[override]
        return None


UNAUTHORIZED = "missing or invalid key: send it in x-api-key, or as Authorization: Bearer <key>"
_KEY_DESCRIPTION = "One of the keys in API_KEY / API_KEY_FILE."

ApiKeyDep = Security(
    _ApiKeyHeader(name="x-api-key", scheme_name="APIKeyHeader", auto_error=False, description=_KEY_DESCRIPTION)
)
BearerDocDep = Security(_BearerDocumented(scheme_name="HTTPBearer", auto_error=False, description=_KEY_DESCRIPTION))


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


async def if_none_match_tags(
    if_none_match: Annotated[
        str | None, Header(description="Versions (ETags) the caller already has: then 304, with no body.")
    ] = None,
) -> frozenset[str]:
    # Any entity tag is valid here (RFC 9110): one that is not a version simply never matches.
    if if_none_match is None:
        return frozenset()
    return frozenset(tag.strip().removeprefix("W/").strip('"') for tag in if_none_match.split(","))


IfNoneMatchDep = Annotated[frozenset[str], Depends(if_none_match_tags)]


# A user id's characters are at most 4 bytes of UTF-8 each, each byte 3 characters percent-encoded.
_MAX_ENCODED_USER = 12 * MAX_USER_ID


async def on_behalf_of(
    user: Annotated[
        str | None,
        Header(
            alias=ON_BEHALF_OF,
            max_length=_MAX_ENCODED_USER,
            description="Answer for this user only (percent-encoded): another user's session or message is a 404.",
        ),
    ] = None,
) -> str | None:
    # Percent-encoded by the gateway: a header carries no non-ASCII text, and loses surrounding spaces.
    if user is None:
        return None
    decoded = unquote(user)
    # Bounded decoded, as every user id is: 255 characters of "é" are 1530 encoded. Said in terms of the user id,
    # the gateway relays it to its caller, who never sent this header.
    if not usable_user_id(decoded):
        raise BadRequest(
            f"the user id must be 1 to {MAX_USER_ID} characters long, none a control character",
            code=ErrorCode.INVALID_VALUE,
        )
    return decoded


OnBehalfOfDep = Annotated[str | None, Depends(on_behalf_of)]


async def check_owner(request: Request, db: DbDep, user: OnBehalfOfDep) -> None:
    """For a request made on behalf of a user: the path's session or message must be theirs, or not exist.

    Another user's is answered exactly as one that does not exist. One that does not exist is left to the
    route (a turn creates its session).
    """
    if user is None:
        return
    params = request.path_params
    for name, owner_of in (("session_id", sessions.owner_of), ("message_id", messages.owner_of)):
        if (raw := params.get(name)) is None:
            continue
        try:
            item_id = uuid.UUID(raw)
        except ValueError:
            return  # the route refuses it
        owner = await db.run_autocommit(owner_of, item_id)
        if owner is not None and owner != user:
            raise NotFound(f"{name.removesuffix('_id')} {item_id} not found")


OwnerCheck = Depends(check_owner)
