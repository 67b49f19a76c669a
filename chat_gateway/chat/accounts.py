"""User keys and limits (admins), and usage (everyone their own; admins anyone's), kept by persistence."""

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query

from chat_gateway.deps import CallerDep, PersistenceDep
from shared.identity import KeyCreate, KeyCreated, KeyRead, Limits, PersonId, UsageReport, UserLimits

router = APIRouter()

UserQuery = Annotated[str | None, Query(min_length=1, max_length=255)]
UserPath = Annotated[str, Path(min_length=1, max_length=255)]
PersonPath = Annotated[PersonId, Path(min_length=1, max_length=255)]  # reserved ids refused (422)


@router.post("/admin/keys", status_code=201, tags=["admin"])
async def create_key(body: KeyCreate, caller: CallerDep, persistence: PersistenceDep) -> KeyCreated:
    """Create a user's key: shown in this answer only (admins)."""
    caller.require_admin()
    return await persistence.keys.create(body)


@router.get("/admin/keys", tags=["admin"])
async def list_keys(caller: CallerDep, persistence: PersistenceDep, user_id: UserQuery = None) -> list[KeyRead]:
    """List user keys, every user's or one user's, without the keys themselves (admins)."""
    caller.require_admin()
    return await persistence.keys.list(user_id)


@router.delete("/admin/keys/{key_id}", tags=["admin"])
async def revoke_key(key_id: uuid.UUID, caller: CallerDep, persistence: PersistenceDep) -> KeyRead:
    """Revoke a user key: refused by every gateway within KEY_CACHE_SECONDS (admins)."""
    caller.require_admin()
    return await persistence.keys.revoke(key_id)


@router.get("/admin/users/{user_id:path}/limits", tags=["admin"])
async def get_user_limits(user_id: UserPath, caller: CallerDep, persistence: PersistenceDep) -> UserLimits:
    """A user's own limits; null ones are the gateway's defaults (admins)."""
    caller.require_admin()
    return UserLimits(user_id=user_id, limits=await persistence.users.limits(user_id))


@router.put("/admin/users/{user_id:path}/limits", tags=["admin"])
async def set_user_limits(
    user_id: PersonPath, body: Limits, caller: CallerDep, persistence: PersistenceDep
) -> UserLimits:
    """Set a user's limits: requests per minute, tokens per day and per month (admins)."""
    caller.require_admin()
    return await persistence.users.set_limits(user_id, body)


@router.get("/usage", tags=["usage"])
async def usage(
    caller: CallerDep,
    persistence: PersistenceDep,
    user_id: UserQuery = None,
    since: Annotated[date | None, Query(description="First day (UTC); default: the month's first.")] = None,
    until: Annotated[date | None, Query(description="Last day (UTC), included; default: today.")] = None,
) -> UsageReport:
    """Tokens by day and model: your own; an admin's, any user's or everyone's."""
    params = {"user_id": caller.acting_for(user_id), "since": since, "until": until}
    return await persistence.usage.report({name: value for name, value in params.items() if value is not None})
