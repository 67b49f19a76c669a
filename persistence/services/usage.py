"""The usage ledger: every query on usage_records lives here.

An answer's record is opened with its turn (its tokens reserved) and settled when the answer ends: with the
upstream's figures when it sent them, else an estimate of the answer's text (``CHARS_PER_TOKEN``), counted as
estimated. A resumed answer's record is opened again and its new run's tokens are added. Token budgets are
checked against the ledger before a turn is stored or an answer resumed, under a lock per user, so concurrent
starts are admitted one at a time: a budget is passed by at most the last one admitted.
"""

import math
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    Date,
    Text,
    bindparam,
    case,
    cast,
    delete,
    distinct,
    func,
    literal,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import ScalarSelect, Subquery

from persistence.db import insert_on_conflict
from persistence.models import ChatSession, Message, UsagePart, UsageRecord, utcnow
from shared import Conflict, ErrorCode
from shared.identity import CHARS_PER_TOKEN, MAX_TOKENS, TurnAccount, UsageReport, UsageRow, UsageTotal
from shared.resources import AnswerPart

_TABLE = UsageRecord.metadata.tables[UsageRecord.__tablename__]
_PARTS = UsagePart.metadata.tables[UsagePart.__tablename__]
_TOKENS = ("prompt_tokens", "completion_tokens", "total_tokens", "estimated_tokens")
_COUNTED = UsageRecord.total_tokens + UsageRecord.reserved_tokens


def day_start(now: datetime) -> datetime:
    return datetime.combine(now.date(), time(), UTC)


def month_start(now: datetime) -> datetime:
    return datetime.combine(now.date().replace(day=1), time(), UTC)


def _next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def with_history(
    db: Session, account: TurnAccount, session_id: uuid.UUID, before: Message | None = None
) -> TurnAccount:
    """``account`` reserving also the stored history its answer's prompt carries: the session's messages (those
    written before the answer ``before``, for an answer already stored), their text, context, parts and calls, up
    to ``account.history_chars`` characters. Without it, a long history (which costs nothing to store) made every
    answer's prompt cost far more than it reserved."""
    if not account.history_chars:
        return account
    size: ColumnElement[Any] = func.length(Message.content)
    for column in (Message.context, Message.parts, Message.tool_calls):
        size = size + func.coalesce(func.length(cast(column, Text)), 0)
    stmt = select(func.coalesce(func.sum(size), 0)).where(Message.session_id == session_id)
    if before is not None:
        stmt = stmt.where(Message.created_at <= before.created_at, Message.id != before.id)
    tokens = math.ceil(min(int(db.scalar(stmt) or 0), account.history_chars) / CHARS_PER_TOKEN)
    reserved = min(account.reserve_tokens + tokens, MAX_TOKENS)
    prompt = min(account.prompt_tokens + tokens, MAX_TOKENS)
    return account.model_copy(update={"reserve_tokens": reserved, "prompt_tokens": prompt, "history_chars": 0})


def open_record(
    db: Session, message_id: uuid.UUID, model: str | None, account: TurnAccount, now: datetime | None = None
) -> None:
    """Record a new answer's tokens as reserved; with budgets, refuse it (409 ``budget_exceeded``) when one is
    spent. A replay of a recorded answer is neither checked nor recorded again."""
    now = now or utcnow()
    if account.has_budget:
        _lock_user(db, account.user_id)
        if db.get(UsageRecord, message_id) is None:
            check_budgets(db, account, now)
    db.execute(_new_record(db, message_id, model, account, now).on_conflict_do_nothing(index_elements=["message_id"]))


def reopen(db: Session, message_id: uuid.UUID, account: TurnAccount) -> None:
    """Before an answer is resumed: check its user's budgets and reserve its new run (in a transaction)."""
    _lock_user(db, account.user_id)
    if account.history_chars and (answer := db.get(Message, message_id)) is not None:
        account = with_history(db, account, answer.session_id, answer)
    now = utcnow()
    check_budgets(db, account, now)
    stmt = _new_record(db, message_id, None, account, now)
    # Dated by this run: a budget is a day's or a month's, and a run resumed today is today's (its record's earlier
    # runs move with it: counted more, never less).
    reserved = {"pending": True, "reserved_tokens": account.reserve_tokens, "created_at": now}
    reserved["reserved_prompt_tokens"] = account.prompt_tokens
    db.execute(stmt.on_conflict_do_update(index_elements=["message_id"], set_=reserved))


def open_run(db: Session, message_id: uuid.UUID, now: datetime) -> None:
    """An answer's new run begins (claimed: resumed, recovered, taken over): its record counts again until the run
    is settled, and one that has none (an answer stored without a turn) gets one, its session's user's. Every
    generated token is in the ledger, whoever started the run."""
    owner = select(ChatSession.user_id).join(Message, Message.session_id == ChatSession.id)
    user_id = db.scalar(owner.where(Message.id == message_id))
    if user_id is None:
        return
    # Built unvalidated: a session's owner stored before the user-id rule is still billed.
    stmt = _new_record(db, message_id, None, TurnAccount.model_construct(user_id=user_id), now)
    db.execute(stmt.on_conflict_do_update(index_elements=["message_id"], set_={"pending": True, "created_at": now}))


def _new_record(
    db: Session, message_id: uuid.UUID, model: str | None, account: TurnAccount, now: datetime
) -> postgresql.Insert | sqlite.Insert:
    """The INSERT of an answer's record, reserving its tokens (token counts start at the table's 0)."""
    values = _record_values(message_id, model, account, now)
    return insert_on_conflict(db.get_bind().dialect.name, _TABLE).values(values)


# Token counts too: inside a larger statement (record_statement), a column's default is not filled in.
_RECORDED = (
    "message_id",
    "user_id",
    "model",
    "created_at",
    "pending",
    "reserved_tokens",
    "reserved_prompt_tokens",
    *_TOKENS,
)


def _record_values(message_id: uuid.UUID, model: str | None, account: TurnAccount, now: datetime) -> dict[str, Any]:
    reserved = (account.reserve_tokens, account.prompt_tokens)
    values = (message_id, account.user_id, model, now, True, *reserved, *(0 for _ in _TOKENS))
    return dict(zip(_RECORDED, values, strict=True))


def record_statement(dialect: str, when: ColumnElement[bool]) -> postgresql.Insert | sqlite.Insert:
    """``open_record``'s INSERT without budgets, made only ``when`` holds, as a part of a larger statement (a turn's:
    turn_statements.py); parameters from ``record_params``."""
    values = select(*(bindparam(f"record_{name}", type_=_TABLE.c[name].type) for name in _RECORDED)).where(when)
    stmt = insert_on_conflict(dialect, _TABLE).from_select(_RECORDED, values)
    return stmt.on_conflict_do_nothing(index_elements=["message_id"])


def record_params(message_id: uuid.UUID, model: str | None, account: TurnAccount, now: datetime) -> dict[str, Any]:
    return {f"record_{name}": value for name, value in _record_values(message_id, model, account, now).items()}


def _lock_user(db: Session, user_id: str) -> None:
    # SQLite's writers are serialised already (every transaction begins IMMEDIATE).
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:user_id, 7001))"), {"user_id": user_id})


def check_budgets(db: Session, account: TurnAccount, now: datetime) -> None:
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
                code=ErrorCode.BUDGET_EXCEEDED,
                limit=limit,
                used=int(used),
                period=period,
                retry_after=retry_after,
            )


def settle(db: Session, message_id: uuid.UUID, usage: dict[str, Any] | None, length: int) -> None:
    """Add an ended run's tokens: the upstream's figures, else estimated: the prompt it reserved (it was sent, and
    is billed) and what the answer's text grew by.

    Only a pending record is settled, so a run is never counted twice.
    """
    values: dict[str, Any] = {"pending": False, "reserved_tokens": 0, "reserved_prompt_tokens": 0}
    if (figures := _figures(usage)) is not None:
        values |= {key: getattr(UsageRecord, key) + figures[key] for key in ("prompt_tokens", "completion_tokens")}
        values["total_tokens"] = UsageRecord.total_tokens + figures["total_tokens"]
    else:
        values |= _estimated(literal(math.ceil(length / CHARS_PER_TOKEN)))
    db.execute(update(UsageRecord).where(UsageRecord.message_id == message_id, UsageRecord.pending).values(values))


def rename(db: Session, message_id: uuid.UUID, model: str | None) -> None:
    """The answer's model changed (a fallback wrote it from its first word): its tokens count under it."""
    db.execute(update(UsageRecord).where(UsageRecord.message_id == message_id).values(model=model))


def _figures(usage: dict[str, Any] | None) -> dict[str, int] | None:
    """The upstream's token counts in ``usage``, None when it gives no total (nor both the prompt's and the
    completion's)."""
    totals = {key: value for key, value in (usage or {}).items() if isinstance(value, int)}
    prompt, completion = totals.get("prompt_tokens"), totals.get("completion_tokens")
    total = totals.get("total_tokens", prompt + completion if prompt is not None and completion is not None else None)
    if total is None:
        return None
    return {"prompt_tokens": prompt or 0, "completion_tokens": completion or 0, "total_tokens": total}


def settle_parts(db: Session, message_id: uuid.UUID, parts: list[AnswerPart], length: int) -> None:
    """Add an ended run's tokens spent by several models, each part's under its model (``usage_parts``) and all of
    them in the answer's record, which budgets count. A part without the upstream's figures is estimated: the
    prompt its run reserved (sent to its model too) and its text.

    Only a pending record is settled, so a run is never counted twice.
    """
    pending = UsageRecord.message_id == message_id, UsageRecord.pending
    reserved_prompt = db.scalar(select(UsageRecord.reserved_prompt_tokens).where(*pending))
    if reserved_prompt is None:
        return
    by_model: dict[str, dict[str, int]] = {}
    ends = [part.offset for part in parts[1:]] + [length]
    for part, end in zip(parts, ends, strict=True):
        spent = _figures(part.usage)
        if spent is None:
            written = math.ceil(max(0, end - part.offset) / CHARS_PER_TOKEN)
            spent = {"prompt_tokens": reserved_prompt, "completion_tokens": written}
            spent |= {"total_tokens": reserved_prompt + written, "estimated_tokens": reserved_prompt + written}
        tokens = by_model.setdefault(part.model, dict.fromkeys(_TOKENS, 0))
        for key, value in spent.items():
            tokens[key] += value
    run = {key: sum(tokens[key] for tokens in by_model.values()) for key in _TOKENS}
    values = {key: getattr(UsageRecord, key) + run[key] for key in _TOKENS}
    cleared = {"pending": False, "reserved_tokens": 0, "reserved_prompt_tokens": 0}
    db.execute(update(UsageRecord).where(*pending).values(values | cleared))
    rows = [{"message_id": message_id, "model": model} | tokens for model, tokens in by_model.items()]
    stmt = insert_on_conflict(db.get_bind().dialect.name, _PARTS).values(rows)
    added = {key: _PARTS.c[key] + stmt.excluded[key] for key in _TOKENS}
    db.execute(stmt.on_conflict_do_update(index_elements=["message_id", "model"], set_=added))


def _estimated(counted: Any) -> dict[str, Any]:
    """A run's tokens without the upstream's figures: its prompt as reserved, and its text's growth (``counted``,
    the tokens of the answer's whole text, of which earlier runs counted some)."""
    grown = case((UsageRecord.completion_tokens < counted, counted - UsageRecord.completion_tokens), else_=0)
    prompt = UsageRecord.reserved_prompt_tokens
    return {
        "prompt_tokens": UsageRecord.prompt_tokens + prompt,
        "completion_tokens": UsageRecord.completion_tokens + grown,
        "total_tokens": UsageRecord.total_tokens + prompt + grown,
        "estimated_tokens": UsageRecord.estimated_tokens + prompt + grown,
    }


def forget(db: Session, message_id: uuid.UUID) -> None:
    """The record of an answer that was not stored after all (its turn was another's): it never counts."""
    db.execute(delete(UsageRecord).where(UsageRecord.message_id == message_id))


def release_session(db: Session, session_id: uuid.UUID) -> None:
    """Before a session is deleted: its answers still being generated stop counting as reserved."""
    _release(db, select(Message.id).where(Message.session_id == session_id).scalar_subquery())


def release_message(db: Session, message_id: uuid.UUID) -> None:
    """Before a message is deleted: if it is an answer being generated, it stops counting as reserved."""
    _release(db, select(Message.id).where(Message.id == message_id).scalar_subquery())


def _release(db: Session, answers: ScalarSelect[uuid.UUID]) -> None:
    """Answers deleted while being generated: their runs end here, charged as estimated (their prompt was sent)."""
    length = select(func.length(Message.content)).where(Message.id == UsageRecord.message_id).scalar_subquery()
    counted = (func.coalesce(length, 0) + (CHARS_PER_TOKEN - 1)) // CHARS_PER_TOKEN
    db.execute(
        update(UsageRecord)
        .where(UsageRecord.message_id.in_(answers), UsageRecord.pending)
        .values(pending=False, reserved_tokens=0, reserved_prompt_tokens=0, **_estimated(counted))
        .execution_options(synchronize_session=False)
    )


def report(db: Session, user_id: str | None, since: date, until: date) -> UsageReport:
    """Totals by day, user and model from ``since`` to ``until``, both included (days in UTC): an answer several
    models wrote is an answer of each, with each one's tokens."""
    start = datetime.combine(since, time(), UTC)
    end = datetime.combine(until + timedelta(days=1), time(), UTC)
    chosen = [UsageRecord.created_at >= start, UsageRecord.created_at < end]
    if user_id is not None:
        chosen.append(UsageRecord.user_id == user_id)
    ledger = _ledger(chosen)
    column = ledger.c.created_at
    day = cast(func.timezone("UTC", column), Date) if db.get_bind().dialect.name == "postgresql" else func.date(column)
    stmt = (
        select(
            day.label("day"),
            ledger.c.user_id,
            ledger.c.model,
            func.count(distinct(ledger.c.message_id)),
            *(func.sum(ledger.c[key]) for key in _TOKENS),
            func.count(distinct(case((ledger.c.pending, ledger.c.message_id)))),
        )
        .group_by(day, ledger.c.user_id, ledger.c.model)
        .order_by(day, ledger.c.user_id, ledger.c.model)
    )
    rows = [
        UsageRow(
            day=_date(row[0]),
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
    # An answer several models wrote is in a row of each: its day counts it once.
    days = select(day, func.count(distinct(ledger.c.message_id))).group_by(day)
    answers_by_day = {_date(value).isoformat(): count for value, count in db.execute(days)}
    return UsageReport(
        since=since,
        until=until,
        user_id=user_id,
        total_tokens=sum(row.total_tokens for row in rows),
        by_day=_totals(rows, lambda row: row.day.isoformat(), answers_by_day),
        by_model=_totals(rows, lambda row: row.model or ""),
        rows=rows,
    )


def _ledger(chosen: list[ColumnElement[bool]]) -> Subquery:
    """The chosen records' tokens by model: an answer's parts' rows, and what they leave to its record's model (all
    of its tokens, for an answer one model wrote)."""
    split = (
        select(UsagePart.message_id, *(func.sum(_PARTS.c[key]).label(key) for key in _TOKENS))
        .group_by(UsagePart.message_id)
        .subquery()
    )
    record = (UsageRecord.message_id, UsageRecord.user_id, UsageRecord.created_at, UsageRecord.pending)
    rest = (
        select(
            *record,
            UsageRecord.model,
            *((_TABLE.c[key] - func.coalesce(split.c[key], 0)).label(key) for key in _TOKENS),
        )
        .outerjoin(split, split.c.message_id == UsageRecord.message_id)
        .where(*chosen, or_(split.c.message_id.is_(None), UsageRecord.total_tokens != split.c.total_tokens))
    )
    parts = (
        select(*record, UsagePart.model, *(_PARTS.c[key] for key in _TOKENS))
        .join(UsagePart, UsagePart.message_id == UsageRecord.message_id)
        .where(*chosen)
    )
    return union_all(rest, parts).subquery()


def _date(value: date | str) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _totals(rows: list[UsageRow], key: Any, counted: dict[str, int] | None = None) -> list[UsageTotal]:
    """The rows' tokens and answers by ``key``, the answers as ``counted`` when it counts them."""
    answers: dict[str, int] = defaultdict(int)
    tokens: dict[str, int] = defaultdict(int)
    for row in rows:
        answers[key(row)] += row.answers
        tokens[key(row)] += row.total_tokens
    answers |= counted or {}
    return [UsageTotal(key=name, answers=answers[name], total_tokens=tokens[name]) for name in sorted(tokens)]
