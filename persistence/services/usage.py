"""The usage ledger: every query on usage_records lives here.

An answer's record is written with its turn (its tokens reserved), and settled once it ends: with the
upstream's figures when it sent them, else an estimate of the answer's own text (``CHARS_PER_TOKEN``), marked
as such. Token budgets are checked against it before a turn is stored, under a lock per user, so concurrent
starts are admitted one at a time: past a budget by at most the last one admitted.
"""

import math
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Date, and_, case, cast, func, select, text, update
from sqlalchemy.orm import Session

from persistence.db import insert_on_conflict
from persistence.models import UsageRecord, utcnow
from shared import Conflict
from shared.identity import TurnAccount, UsageReport, UsageRow

CHARS_PER_TOKEN = 4
_TABLE = UsageRecord.metadata.tables[UsageRecord.__tablename__]
_COUNTED = func.coalesce(UsageRecord.total_tokens, UsageRecord.reserved_tokens)


def day_start(now: datetime) -> datetime:
    return datetime.combine(now.date(), time(), UTC)


def month_start(now: datetime) -> datetime:
    return datetime.combine(now.date().replace(day=1), time(), UTC)


def _next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def open_record(
    db: Session, message_id: uuid.UUID, model: str | None, account: TurnAccount, now: datetime | None = None
) -> None:
    """Record a new answer's tokens as reserved; with budgets, refuse it (409 ``budget_exceeded``) when one is
    spent. A replay of a recorded answer is neither checked nor recorded again."""
    now = now or utcnow()
    if account.tokens_per_day is not None or account.tokens_per_month is not None:
        _lock_user(db, account.user_id)
        if db.get(UsageRecord, message_id) is None:
            _check_budgets(db, account, now)
    values = {
        "message_id": message_id,
        "user_id": account.user_id,
        "model": model,
        "created_at": now,
        "reserved_tokens": account.reserve_tokens,
        "estimated": False,
    }
    dialect = db.get_bind().dialect.name
    db.execute(insert_on_conflict(dialect, _TABLE).values(values).on_conflict_do_nothing(index_elements=["message_id"]))


def _lock_user(db: Session, user_id: str) -> None:
    # SQLite's writers are serialised already (every transaction begins IMMEDIATE).
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:user_id, 7001))"), {"user_id": user_id})


def _check_budgets(db: Session, account: TurnAccount, now: datetime) -> None:
    today, month = day_start(now), month_start(now)
    used_today, used_month = db.execute(
        select(
            func.coalesce(func.sum(case((UsageRecord.created_at >= today, _COUNTED), else_=0)), 0),
            func.coalesce(func.sum(_COUNTED), 0),
        ).where(UsageRecord.user_id == account.user_id, UsageRecord.created_at >= month)
    ).one()
    for limit, used, period, resets in (
        (account.tokens_per_day, used_today, "day", today + timedelta(days=1)),
        (account.tokens_per_month, used_month, "month", _next_month(month)),
    ):
        if limit is not None and used >= limit:
            retry_after = max(1, math.ceil((resets - now).total_seconds()))
            raise Conflict(
                f"token budget of {limit} per {period} spent ({used} used): it renews at {resets.isoformat()}",
                code="budget_exceeded",
                limit=limit,
                used=int(used),
                period=period,
                retry_after=retry_after,
            )


def settle(db: Session, message_id: uuid.UUID, usage: dict[str, Any] | None, length: int) -> None:
    """Count an ended answer's tokens: the upstream's figures, else its text's length as an estimate."""
    totals = {key: value for key, value in (usage or {}).items() if isinstance(value, int)}
    prompt, completion = totals.get("prompt_tokens"), totals.get("completion_tokens")
    total = totals.get("total_tokens", prompt + completion if prompt is not None and completion is not None else None)
    if total is not None:
        values: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": total,
            "estimated": False,
        }
    else:
        completion = math.ceil(length / CHARS_PER_TOKEN)
        values = {"prompt_tokens": None, "completion_tokens": completion, "total_tokens": completion, "estimated": True}
    db.execute(update(UsageRecord).where(UsageRecord.message_id == message_id).values(values))


def report(db: Session, user_id: str | None, since: date, until: date) -> UsageReport:
    """Totals by day, user and model from ``since`` to ``until``, both included (days in UTC)."""
    start = datetime.combine(since, time(), UTC)
    end = datetime.combine(until + timedelta(days=1), time(), UTC)
    column = UsageRecord.created_at
    day = cast(func.timezone("UTC", column), Date) if db.get_bind().dialect.name == "postgresql" else func.date(column)
    settled = UsageRecord.total_tokens.is_not(None)
    stmt = (
        select(
            day.label("day"),
            UsageRecord.user_id,
            UsageRecord.model,
            func.count().label("answers"),
            func.coalesce(func.sum(UsageRecord.prompt_tokens), 0),
            func.coalesce(func.sum(UsageRecord.completion_tokens), 0),
            func.coalesce(func.sum(UsageRecord.total_tokens), 0),
            func.coalesce(func.sum(case((UsageRecord.estimated, UsageRecord.total_tokens), else_=0)), 0),
            func.coalesce(func.sum(case((settled, 0), else_=1)), 0),
        )
        .where(and_(column >= start, column < end))
        .group_by(day, UsageRecord.user_id, UsageRecord.model)
        .order_by(day, UsageRecord.user_id, UsageRecord.model)
    )
    if user_id is not None:
        stmt = stmt.where(UsageRecord.user_id == user_id)
    rows = [
        UsageRow(
            day=row[0] if isinstance(row[0], date) else date.fromisoformat(row[0]),
            user_id=row[1],
            model=row[2],
            answers=row[3],
            prompt_tokens=row[4],
            completion_tokens=row[5],
            total_tokens=row[6],
            estimated_tokens=row[7],
            pending_answers=row[8],
        )
        for row in db.execute(stmt)
    ]
    total = sum(row.total_tokens for row in rows)
    return UsageReport(since=since, until=until, user_id=user_id, total_tokens=total, rows=rows)
