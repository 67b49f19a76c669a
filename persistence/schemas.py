import functools
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, ConfigDict, Field, model_validator

from shared import (
    InputModel,
    JSONObject,
    MessageRole,
    MessageStatus,
    ReadModel,
    SessionRead,
    UTCDatetime,
)

# Sessions and messages as both services create them are the contract's (shared/contract.py); the names stay
# importable from here, where persistence's modules have always found them.
from shared.contract import (  # noqa: F401
    OPTIONS_DESCRIPTION,
    PROMPT_DESCRIPTION,
    MessageCreate,
    PatchModel,
    Prompt,
    SessionCreate,
    SessionUpdate,
    Title,
)
from shared.identity import UserId
from shared.resources import AnswerParts, Context, FinishReason, ModelName, ToolFields
from shared.schemas import check_storable

# The APIs of the systems this one replaces, kept for their existing clients.


class LenientInputModel(InputModel):
    """A request body of an API whose clients may send fields it never knew: those are ignored, as that API's
    FastAPI did; the known ones are checked as every input is."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        check_storable({k: v for k, v in data.items() if k in cls.model_fields} if isinstance(data, dict) else data)
        return data


def _getter(stored: Any) -> Callable[[str], Any]:
    """Reads a stored row's columns, from a dict (pages, a new message) or an ORM object alike."""
    return stored.get if isinstance(stored, Mapping) else functools.partial(getattr, stored)


# The original message API.

LegacyRole = Literal["human", "ai", "user", "assistant"]


class LegacyMessageCreate(LenientInputModel):
    chat_id: uuid.UUID
    content: str
    role: LegacyRole
    sent_at: UTCDatetime
    rating: bool | None = None


class LegacyMessageUpdate(PatchModel, LenientInputModel):
    not_nullable = frozenset({"content"})

    content: str | None = None
    rating: bool | None = None


class LegacyMessageRead(ReadModel):
    message_id: uuid.UUID
    chat_id: uuid.UUID
    content: str
    rating: bool | None
    sent_at: datetime
    # "tool": a tool's result an agent stored through the other APIs; this API's clients never send one.
    role: LegacyRole | Literal["system", "tool"] = Field(
        description="As it was sent: `human` stays `human`, `ai` stays `ai`."
    )

    @classmethod
    def of(cls, stored: Any) -> "LegacyMessageRead":
        get = _getter(stored)
        return cls(
            message_id=get("id"),
            chat_id=get("session_id"),
            content=get("content"),
            rating=get("rating"),
            sent_at=get("sent_at"),
            role=get("legacy_role") or get("role"),
        )


# The RAG chat-storage API (under /api/v1): its names for our sessions and messages.

# "tool": a tool's result an agent stored through the other APIs, shown as it is (this API never takes one).
RagSender = Literal["user", "ai", "system", "tool"]
RAG_SENDERS: dict[MessageRole, RagSender] = {
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "ai",
    MessageRole.SYSTEM: "system",
    MessageRole.TOOL: "tool",
}


class RagSessionCreate(LenientInputModel):
    user_id: UserId
    name: Title = "New chat"


class RagSessionRename(LenientInputModel):
    name: Title


class RagSession(ReadModel):
    id: uuid.UUID
    user_id: str
    name: str
    is_favorite: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, stored: Any) -> "RagSession":
        get = _getter(stored)
        return cls(
            id=get("id"),
            user_id=get("user_id"),
            name=get("title"),
            is_favorite=get("is_favorite"),
            created_at=get("created_at"),
            updated_at=get("updated_at"),
        )


class RagSessionList(ReadModel):
    sessions: list[RagSession]
    total: int = Field(description="How many sessions match, on every page.")


class RagMessageCreate(LenientInputModel):
    sender: Literal["user", "ai"]
    content: str = ""
    context: Context | None = None
    status: Literal[MessageStatus.PENDING, MessageStatus.COMPLETE, MessageStatus.FAILED] = Field(
        default=MessageStatus.COMPLETE,
        description="An answer stored before it is finished is `pending` or `failed`: resume continues it.",
    )
    partial_content: str | None = Field(default=None, description="An unfinished answer's text so far.")
    error_message: str | None = None

    @model_validator(mode="after")
    def _partial_only_unfinished(self) -> "RagMessageCreate":
        if self.partial_content is not None and self.status == MessageStatus.COMPLETE:
            raise ValueError("partial_content is for an unfinished answer (status pending or failed)")
        if self.partial_content is not None and self.content and self.content != self.partial_content:
            raise ValueError("an unfinished answer has one text: give it as partial_content")
        return self

    def to_message(self) -> MessageCreate:
        return MessageCreate(
            role=MessageRole.ASSISTANT if self.sender == "ai" else MessageRole.USER,
            content=self.partial_content if self.partial_content is not None else self.content,
            context=self.context,
            status=self.status,
            error=self.error_message,
        )


class RagMessage(ReadModel):
    id: uuid.UUID
    session_id: uuid.UUID
    sender: RagSender
    content: str = Field(description="The text of a finished message; empty while an answer is unfinished.")
    context: Context | None
    status: MessageStatus
    partial_content: str | None = Field(description="An unfinished answer's saved text, which resume continues.")
    error_message: str | None
    timestamp: datetime

    @classmethod
    def of(cls, stored: Any) -> "RagMessage":
        get = _getter(stored)
        unfinished = get("role") == MessageRole.ASSISTANT and get("status") != MessageStatus.COMPLETE
        return cls(
            id=get("id"),
            session_id=get("session_id"),
            sender=RAG_SENDERS[MessageRole(get("role"))],
            content="" if unfinished else get("content"),
            context=get("context"),
            status=get("status"),
            partial_content=get("content") if unfinished else None,
            error_message=get("error"),
            timestamp=get("sent_at"),
        )


class RagMessageList(ReadModel):
    messages: list[RagMessage]
    total: int = Field(description="How many messages the session has.")


class RagResumed(ReadModel):
    message: RagMessage
    status: MessageStatus = Field(description="`in_progress`: the gateways continue it from its saved text.")


# Export and import of a whole session.

ExportFormat = Literal["durable-chat/session"]
# 2: messages may hold tool calls, tool results and content parts. Version 1 documents still import.
ExportVersion = Literal[1, 2]


class ExportedMessage(InputModel, ToolFields):
    id: uuid.UUID
    role: MessageRole
    content: str
    context: Context | None = None
    status: MessageStatus
    error: str | None = None
    rating: bool | None = None
    model: ModelName | None = None
    finish_reason: FinishReason | None = None
    usage: JSONObject | None = None
    options: JSONObject | None = None
    prompt: Prompt | None = None
    # Absent when one model wrote it all, so that older documents and newer ones read alike.
    answer_parts: AnswerParts | None = Field(default=None, exclude_if=lambda parts: parts is None)
    attempts: int = Field(default=0, ge=0, le=2**31 - 1)  # an INTEGER column
    legacy_role: Literal["human", "ai"] | None = Field(
        default=None, description="The role as the original message API's client spelled it."
    )
    sent_at: UTCDatetime
    created_at: UTCDatetime
    updated_at: UTCDatetime

    @model_validator(mode="after")
    def _tool_fields_on_their_roles(self) -> "ExportedMessage":
        self.check_tool_fields(self.role)
        return self


class ExportedSession(InputModel):
    id: uuid.UUID
    user_id: UserId
    title: Title
    is_favorite: bool = False
    # Read from the ORM attribute metadata_ on export, from "metadata" on import.
    metadata: JSONObject | None = Field(default=None, validation_alias=AliasChoices("metadata_", "metadata"))
    created_at: UTCDatetime
    updated_at: UTCDatetime


class SessionExport(InputModel):
    """A complete, versioned document of one session: exported, and accepted back by import."""

    format: ExportFormat = "durable-chat/session"
    version: ExportVersion = 2
    session: ExportedSession
    messages: list[ExportedMessage]

    @model_validator(mode="after")
    def _unique_message_ids(self) -> "SessionExport":
        seen: set[uuid.UUID] = set()
        for index, message in enumerate(self.messages):
            if message.id in seen:
                raise ValueError(f"messages[{index}].id {message.id} appears twice")
            seen.add(message.id)
        return self


class ImportResult(ReadModel):
    session: SessionRead
    messages: int
    remapped: bool = Field(description="True when ids were taken and new ones were given.")
