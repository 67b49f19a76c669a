"""User keys and per-user limits: every query on api_keys and user_limits lives here."""

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from persistence.models import ApiKey, UserLimit, utcnow
from shared import ErrorCode, NotFound, Unauthorized
from shared.identity import USER_KEY_PREFIX, KeyCreate, KeyCreated, KeyIdentity, KeyRead, Limits, UserLimits

PREFIX_SHOWN = 12
# A key's last use is written at most this often: a lookup per request would otherwise be a write per request.
LAST_USED_PRECISION = timedelta(minutes=1)
INVALID_KEY = "missing or invalid key: send it in x-api-key, or as Authorization: Bearer <key>"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _limits(row: ApiKey | UserLimit | None) -> Limits:
    if row is None:
        return Limits()
    return Limits(
        requests_per_minute=row.requests_per_minute,
        tokens_per_day=row.tokens_per_day,
        tokens_per_month=row.tokens_per_month,
    )


def _read(row: ApiKey) -> KeyRead:
    return KeyRead(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        limits=_limits(row),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def create_key(db: Session, data: KeyCreate) -> KeyCreated:
    key = USER_KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=uuid.uuid4(),
        user_id=data.user_id,
        name=data.name,
        key_hash=key_hash(key),
        prefix=key[:PREFIX_SHOWN],
        created_at=utcnow(),
        expires_at=data.expires_at,
        **data.limits.model_dump(),
    )
    db.add(row)
    db.flush()
    return KeyCreated(**_read(row).model_dump(), key=key)


def list_keys(db: Session, user_id: str | None) -> list[KeyRead]:
    stmt = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
    if user_id is not None:
        stmt = stmt.where(ApiKey.user_id == user_id)
    return [_read(row) for row in db.scalars(stmt)]


def revoke_key(db: Session, key_id: uuid.UUID) -> KeyRead:
    """Revoke a key for good (revoking it again changes nothing)."""
    row = db.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"key {key_id} not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        db.flush()
    return _read(row)


def identify(db: Session, key: str, now: datetime | None = None) -> KeyIdentity:
    """Whom a key belongs to, with its limits over its user's; 401 for an unknown, revoked or expired key."""
    now = now or utcnow()
    row = db.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash(key)))
    # Codes of their own: the gateway tells a refused user key from its own service key refused (code unauthorized).
    if row is None or row.revoked_at is not None:
        raise Unauthorized(INVALID_KEY, code=ErrorCode.INVALID_USER_KEY)
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized("the key has expired", code=ErrorCode.KEY_EXPIRED)
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_PRECISION:
        row.last_used_at = now
        db.flush()
    limits = _limits(row).over(_limits(db.get(UserLimit, row.user_id)))
    return KeyIdentity(key_id=row.id, user_id=row.user_id, limits=limits)


def user_limits(db: Session, user_id: str) -> UserLimits:
    return UserLimits(user_id=user_id, limits=_limits(db.get(UserLimit, user_id)))


def set_user_limits(db: Session, user_id: str, limits: Limits) -> UserLimits:
    row = db.get(UserLimit, user_id)
    if row is None:
        try:
            with db.begin_nested():  # two first settings at once: the second updates the first's row
                row = UserLimit(user_id=user_id, updated_at=utcnow())
                db.add(row)
                db.flush()
        except IntegrityError:
            row = db.get(UserLimit, user_id)
            assert row is not None
    for name, value in limits.model_dump().items():
        setattr(row, name, value)
    db.flush()
    return UserLimits(user_id=user_id, limits=_limits(row))
