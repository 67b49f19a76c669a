import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, Field, StringConstraints, model_validator

from shared import (
    InputModel,
    JSONObject,
    MessageRead,
    MessageRole,
    MessageStatus,
    ReadModel,
    SessionRead,
    UTCDatetime,
)
from shared.resources import MAX_OFFSET, Context, FinishReason, ModelName

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
UserId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Owner = Annotated[str, StringConstraints(min_length=1, max_length=255)]
LeaseSeconds = Annotated[float, Field(gt=0, le=3600)]
OPTIONS_DESCRIPTION = (
    "An answer's generation options (temperature, max_tokens...), as the model's API takes them: "
    "stored for whoever continues the answer."
)
PROMPT_DESCRIPTION = (
    "The messages an answer is asked with, when the session's history is not what the model is shown "
    "(an OpenAI-compatible client's own prompt): stored for whoever continues the answer."
)
Prompt = Annotated[list[JSONObject], Field(min_length=1)]


class PatchModel(InputModel):
    """A partial update: absent fields stay as they are; `null` clears only the fields that may be empty."""

    not_nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null_for_required(self) -> "PatchModel":
        for name in self.not_nullable & self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


# Sessions


class SessionCreate(InputModel):
    id: uuid.UUID | None = Field(
        default=None, description="Client-chosen id: creating it again returns the stored session (200)."
    )
    user_id: UserId = "anonymous"
    title: Title = "New chat"
    is_favorite: bool = False
    metadata: JSONObject | None = None


class SessionUpdate(PatchModel):
    not_nullable = frozenset({"title", "is_favorite"})

    title: Title | None = None
    is_favorite: bool | None = None
    metadata: JSONObject | None = None


class SessionRename(InputModel):
    title: Title


class FavoriteSet(InputModel):
    is_favorite: bool


# Messages


class MessageCreate(InputModel):
    id: uuid.UUID | None = Field(
        default=None, description="Client-chosen id: retrying with the same id and body is safe."
    )
    role: MessageRole
    content: str = ""
    context: Context | None = None
    status: Literal[MessageStatus.PENDING, MessageStatus.COMPLETE, MessageStatus.FAILED] | None = Field(
        default=None,
        description="Defaults to `pending` for assistant messages, `complete` otherwise. "
        "A message becomes `in_progress` only by being claimed.",
    )
    error: str | None = None
    rating: bool | None = None
    model: ModelName | None = None
    options: JSONObject | None = Field(default=None, description=OPTIONS_DESCRIPTION)
    prompt: Prompt | None = Field(default=None, description=PROMPT_DESCRIPTION)
    sent_at: UTCDatetime | None = None

    @model_validator(mode="after")
    def _inputs_for_answers(self) -> "MessageCreate":
        if (self.options is not None or self.prompt is not None) and self.role != MessageRole.ASSISTANT:
            raise ValueError("options and prompt are for assistant messages only")
        return self


class MessageUpdate(PatchModel):
    not_nullable = frozenset({"status", "content"})

    status: MessageStatus | None = None
    error: str | None = None
    rating: bool | None = None
    model: ModelName | None = None
    finish_reason: FinishReason | None = None
    usage: JSONObject | None = None
    content: str | None = None


class AnswerFinish(InputModel):
    """How an answer ended, stored with its last text."""

    status: Literal[MessageStatus.COMPLETE, MessageStatus.FAILED]
    error: str | None = None
    finish_reason: FinishReason | None = None
    usage: JSONObject | None = None
    model: ModelName | None = Field(
        default=None, description="The model that answered, when it differs from the stored one."
    )


class AppendRequest(InputModel):
    offset: int = Field(ge=0, le=MAX_OFFSET, description="Length of the content (in characters) the text goes after.")
    text: str
    owner: Owner | None = Field(default=None, description="When given, the append fails unless it holds the lease.")
    lease_seconds: LeaseSeconds | None = Field(default=None, description="New lease length; the default applies.")
    finish: AnswerFinish | None = Field(
        default=None,
        description="End the answer with this text: it must be in progress, and its lease is released.",
    )


class AppendResult(ReadModel):
    id: uuid.UUID
    length: int
    version: int
    status: MessageStatus
    lease_expires_at: datetime | None


class ClaimRequest(InputModel):
    owner: Owner
    lease_seconds: LeaseSeconds | None = None


# Turns: a question and its answer, stored together before the answer is generated.


class TurnSession(InputModel):
    """The session to create, with the path's id, when it does not exist yet."""

    user_id: UserId = "anonymous"
    title: Title = "New chat"


class TurnQuestion(InputModel):
    id: uuid.UUID | None = Field(default=None, description="Client-chosen id: retrying the turn is then safe.")
    content: str
    context: Context | None = None


class TurnAnswer(InputModel):
    id: uuid.UUID | None = Field(default=None, description="Client-chosen id: retrying the turn is then safe.")
    model: ModelName | None = None
    options: JSONObject | None = Field(default=None, description=OPTIONS_DESCRIPTION)
    prompt: Prompt | None = Field(default=None, description=PROMPT_DESCRIPTION)


class TurnCreate(InputModel):
    session: TurnSession | None = Field(
        default=None, description="When given, the session is created if it does not exist (else 404)."
    )
    question: TurnQuestion
    answer: TurnAnswer = Field(default_factory=TurnAnswer)
    owner: Owner | None = Field(
        default=None, description="When given, the answer is stored claimed by it (in progress); else pending."
    )
    lease_seconds: LeaseSeconds | None = None


class MessageDetail(MessageRead):
    """One message, with its prompt: lists of messages (and turns, whose client sent it) leave it out, since
    it can be as long as a conversation."""

    prompt: list[JSONObject] | None


class MessageText(ReadModel):
    """A message's text from an offset on, and how it stands: what a follower of an answer needs."""

    id: uuid.UUID
    offset: int
    text: str = Field(description="The content from `offset` on.")
    length: int = Field(description="The length of the whole content, in characters.")
    version: int
    status: MessageStatus
    error: str | None
    finish_reason: str | None
    usage: JSONObject | None


class TurnRead(ReadModel):
    question: MessageRead
    answer: MessageRead


# The original message API, kept for its existing clients.

LegacyRole = Literal["human", "ai", "user", "assistant"]


class LegacyMessageCreate(InputModel):
    chat_id: uuid.UUID
    content: str
    role: LegacyRole
    sent_at: UTCDatetime
    rating: bool | None = None


class LegacyMessageUpdate(PatchModel):
    not_nullable = frozenset({"content"})

    content: str | None = None
    rating: bool | None = None


class LegacyMessageRead(ReadModel):
    message_id: uuid.UUID = Field(validation_alias=AliasChoices("message_id", "id"))
    chat_id: uuid.UUID = Field(validation_alias=AliasChoices("chat_id", "session_id"))
    content: str
    rating: bool | None
    sent_at: datetime
    role: MessageRole


class Health(ReadModel):
    status: str


# Export and import of a whole session.

ExportFormat = Literal["durable-chat/session"]
ExportVersion = Literal[1]


class ExportedMessage(InputModel):
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
    attempts: int = Field(default=0, ge=0, le=2**31 - 1)  # an INTEGER column
    sent_at: UTCDatetime
    created_at: UTCDatetime
    updated_at: UTCDatetime


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
    version: ExportVersion = 1
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
