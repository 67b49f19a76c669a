"""User keys, per-user limits and usage, for the gateway (which authenticates its users with them)."""

import uuid
from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from persistence.api.params import NO_NUL
from persistence.deps import DbDep
from persistence.models import utcnow
from persistence.services import keys, usage
from shared import BadRequest
from shared.identity import (
    KeyCheck,
    KeyCreate,
    KeyCreated,
    KeyIdentity,
    KeyRead,
    Limits,
    PersonId,
    TurnAccount,
    UsageReport,
    UserLimits,
)

router = APIRouter(tags=["identity"])

UserQuery = Annotated[str | None, Query(min_length=1, max_length=255, pattern=NO_NUL)]
UserPath = Annotated[str, Path(min_length=1, max_length=255, pattern=NO_NUL)]
PersonPath = Annotated[PersonId, Path(min_length=1, max_length=255, pattern=NO_NUL)]  # reserved ids refused
MAX_REPORT_DAYS = 366


@router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, db: DbDep) -> KeyCreated:
    """Create a user key: the key is in this answer only, and stored as a hash."""
    return await db.run(keys.create_key, body)


@router.get("/keys")
async def list_keys(db: DbDep, user_id: UserQuery = None) -> list[KeyRead]:
    """List user keys (every user's, or one user's), newest first, without the keys themselves."""
    return await db.run_autocommit(keys.list_keys, user_id)


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: uuid.UUID, db: DbDep) -> KeyRead:
    """Revoke a user key for good."""
    return await db.run(keys.revoke_key, key_id)


@router.post("/keys/identify")
async def identify(body: KeyCheck, db: DbDep) -> KeyIdentity:
    """Whom a key belongs to and its limits; 401 for an unknown, revoked or expired key."""
    return await db.run(keys.identify, body.key)


@router.get("/users/{user_id:path}/limits")
async def get_user_limits(user_id: UserPath, db: DbDep) -> UserLimits:
    """A user's own limits (null: the gateway's defaults apply)."""
    return await db.run_autocommit(keys.user_limits, user_id)


@router.put("/users/{user_id:path}/limits")
async def set_user_limits(user_id: PersonPath, body: Limits, db: DbDep) -> UserLimits:
    """Set a user's limits (null: the gateway's defaults apply); a key's own limits come first."""
    return await db.run(keys.set_user_limits, user_id, body)


@router.post("/usage/{message_id}/reserve", status_code=204)
async def reserve(message_id: uuid.UUID, body: TurnAccount, db: DbDep) -> Response:
    """Before an answer is resumed: check its user's budgets (409 budget_exceeded) and reserve its new run."""
    await db.run(usage.reopen, message_id, body)
    return Response(status_code=204)


@router.get("/usage")
async def get_usage(
    db: DbDep,
    user_id: UserQuery = None,
    since: Annotated[date | None, Query(description="First day (UTC), included; default: the month's first.")] = None,
    until: Annotated[date | None, Query(description="Last day (UTC), included; default: today.")] = None,
) -> UsageReport:
    """Tokens by day, user and model over a range of days (every user's, or one user's)."""
    today = utcnow().date()
    until = min(until or today, date.max - timedelta(days=1))  # its end is the next day's start
    since = since or until.replace(day=1)
    if since > until:
        raise BadRequest("since must not be after until")
    if until - since > timedelta(days=MAX_REPORT_DAYS):
        raise BadRequest(f"a report covers at most {MAX_REPORT_DAYS} days")
    return await db.run_autocommit(usage.report, user_id, since, until)
