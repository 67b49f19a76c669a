import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Dialect, Enum, ForeignKey, Index, MetaData, String, Text, TypeDecorator, text
from sqlalchemy import DateTime as _DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared import MessageRole, MessageStatus
from shared.resources import (
    FINISH_REASON_MAX_LENGTH,
    MODEL_MAX_LENGTH,
    TOOL_CALL_ID_MAX_LENGTH,
    TOOL_NAME_MAX_LENGTH,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Search structures live only in the migrations (engine-specific SQL): schema comparison leaves them alone.
SEARCH_OBJECTS = ("messages_fts", "sessions_fts", "ix_messages_search", "ix_sessions_search")


def is_search_object(name: str | None) -> bool:
    return name is not None and name.startswith(SEARCH_OBJECTS)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps naive text, so the zone is restored on load)."""

    impl = _DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; use timezone-aware UTC")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text, so every value must have one format.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _str_enum(enum: type[MessageRole] | type[MessageStatus]) -> Enum:
    return Enum(enum, native_enum=False, length=16, values_callable=lambda members: [m.value for m in members])


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


class ChatSession(Base):
    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(String(500))
    is_favorite: Mapped[bool] = mapped_column(default=False)
    # "metadata" is reserved on declarative classes, so the attribute carries an underscore.
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        # Keyset pages ordered favorites first, newest activity first, with or without a user filter.
        Index("ix_sessions_user_list", "user_id", "is_favorite", "updated_at", "id"),
        Index("ix_sessions_list", "is_favorite", "updated_at", "id"),
    )


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    role: Mapped[MessageRole] = mapped_column(_str_enum(MessageRole))
    content: Mapped[str] = mapped_column(Text, default="")
    # A user message's content parts (text, image_url...) when it was sent as parts: ``content`` holds their text.
    parts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    # The calls an assistant message asks for, and the call a tool message answers (with its tool's name).
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    tool_call_id: Mapped[str | None] = mapped_column(String(TOOL_CALL_ID_MAX_LENGTH))
    name: Mapped[str | None] = mapped_column(String(TOOL_NAME_MAX_LENGTH))
    # The words search finds besides the content: the tools called, or the tool that answered.
    tool_names: Mapped[str | None] = mapped_column(Text)
    # An answer's key of the conversation it answered, for a client that names no session (migration 0009).
    conversation_key: Mapped[str | None] = mapped_column(String(64))
    # An answer's key of the request it answers, by which the same request retried finds it (migration 0011).
    request_key: Mapped[str | None] = mapped_column(String(64))
    # What a Responses API client asked for besides the answer's options (migration 0010).
    response: Mapped[dict[str, Any] | None]
    context: Mapped[dict[str, Any] | None]
    status: Mapped[MessageStatus] = mapped_column(_str_enum(MessageStatus))
    error: Mapped[str | None] = mapped_column(Text)
    rating: Mapped[bool | None]
    model: Mapped[str | None] = mapped_column(String(MODEL_MAX_LENGTH))
    finish_reason: Mapped[str | None] = mapped_column(String(FINISH_REASON_MAX_LENGTH))
    usage: Mapped[dict[str, Any] | None]
    # What the answer is generated from, for whoever continues it: its options (temperature, max_tokens...)
    # and, when a client sent its own (OpenAI-compatible calls), the prompt. Pages of messages leave it out.
    options: Mapped[dict[str, Any] | None]
    # Which model wrote which part of an answer finished on another model (migration 0013): a list of
    # AnswerPart; NULL when one model wrote it all.
    answer_parts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    prompt: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    # The role as the original message API's client spelled it (human, ai), where that differs from ``role``:
    # those routes give it back as it was sent; everything else reads ``role``.
    legacy_role: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=1)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None]
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        Index("ix_messages_session_created", "session_id", "created_at", "id"),
        # The newest messages of every chat (the original message API's GET /messages/).
        Index("ix_messages_created", "created_at", "id"),
        # Only live generations are indexed, so crash recovery stays cheap however large the table grows.
        Index(
            "ix_messages_conversation_key",
            "conversation_key",
            postgresql_where=text("conversation_key IS NOT NULL"),
            sqlite_where=text("conversation_key IS NOT NULL"),
        ),
        Index(
            "ux_messages_request_key",
            "request_key",
            unique=True,
            postgresql_where=text("request_key IS NOT NULL"),
            sqlite_where=text("request_key IS NOT NULL"),
        ),
        Index(
            "ix_messages_stale",
            "lease_expires_at",
            postgresql_where=text("status = 'in_progress'"),
            sqlite_where=text("status = 'in_progress'"),
        ),
    )


class ApiKey(Base):
    """A user key of the gateway: only its SHA-256 is kept (keys are random, so no slow hash is needed)."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    requests_per_minute: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class UserLimit(Base):
    """A user's own limits, for every key of theirs and their tokens (JWT) that set none."""

    __tablename__ = "user_limits"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    requests_per_minute: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class UsageRecord(Base):
    """One answer's tokens, attributed to its user: opened when its turn is stored (or it is resumed), settled
    when it ends.

    Not tied to the message by a foreign key: deleting a chat does not give its tokens back to a budget. While
    ``pending``, the answer also counts for ``reserved_tokens``; each run's tokens add up once it ends.
    """

    __tablename__ = "usage_records"

    message_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(MODEL_MAX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    pending: Mapped[bool] = mapped_column(default=True)
    reserved_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    # Of reserved_tokens, the prompt's estimate: charged when a run ends without the upstream's figures.
    reserved_prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    estimated_tokens: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_usage_records_user_created", "user_id", "created_at"),)


class UsagePart(Base):
    """An answer's tokens spent by one of the models that wrote its parts (migration 0013): the ledger per model.

    Its record (``UsageRecord``) holds the answer's whole usage, which budgets count, parts included; what its
    parts' rows do not account for (runs that ended without parts) is its record's model's.
    """

    __tablename__ = "usage_parts"

    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("usage_records.message_id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(MODEL_MAX_LENGTH), primary_key=True)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    total_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    estimated_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
