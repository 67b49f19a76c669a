"""The wire between the gateway and persistence: every body one sends and the other reads, declared once.

Persistence's routes take and return these; the gateway's client (chat_gateway/clients/persistence.py) builds
and reads them. Resources both serve to their own clients (sessions, messages, pages) are in shared/resources.py;
identity and usage in shared/identity.py.
"""

import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, StringConstraints, model_validator

from shared.enums import MessageRole, MessageStatus
from shared.identity import DEFAULT_USER, TurnAccount, UserId
from shared.resources import (
    MAX_OFFSET,
    AnswerParts,
    Context,
    FinishReason,
    MessageRead,
    ModelName,
    ToolCall,
    ToolFields,
    parts_text,
)
from shared.resources import AnswerPart as AnswerPart  # the contract's, where MessageRead finds it
from shared.schemas import InputModel, JSONObject, ReadModel, UTCDatetime

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
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
# OpenAI sets no limit; these keep a runaway model's answer, or a runaway agent's round, storable.
MAX_TOOL_CALLS = 128
MAX_INPUTS = 128
ToolCalls = Annotated[list[ToolCall], Field(min_length=1, max_length=MAX_TOOL_CALLS)]


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


# Sessions and messages, created (persistence's own routes; the gateway's Conversations API).


class SessionCreate(InputModel):
    id: uuid.UUID | None = Field(
        default=None, description="Client-chosen id: creating it again returns the stored session (200)."
    )
    user_id: UserId = DEFAULT_USER
    title: Title = "New chat"
    is_favorite: bool = False
    metadata: JSONObject | None = None


class SessionUpdate(PatchModel):
    not_nullable = frozenset({"title", "is_favorite"})

    title: Title | None = None
    is_favorite: bool | None = None
    metadata: JSONObject | None = None


# Messages


ConversationKey = Annotated[str, StringConstraints(pattern="^[0-9a-f]{64}$")]


class MessageCreate(InputModel, ToolFields):
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
    conversation_key: ConversationKey | None = Field(
        default=None,
        description="A key of the session's conversation up to this message, when a client adds it (OpenAI's "
        "Conversations API) before it asks for the answer: the request that sends that conversation finds it.",
    )

    @model_validator(mode="after")
    def _inputs_for_answers(self) -> "MessageCreate":
        if (self.options is not None or self.prompt is not None) and self.role != MessageRole.ASSISTANT:
            raise ValueError("options and prompt are for assistant messages only")
        self.check_tool_fields(self.role)
        if self.parts is not None and not self.content:
            self.content = parts_text(self.parts)
        return self


# Sessions, as the gateway relays its clients' changes.


class SessionRename(InputModel):
    title: Title


class FavoriteSet(InputModel):
    is_favorite: bool


# Answers: how they are stored, generated and followed.


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
    tool_calls: ToolCalls | None = Field(
        default=None, description="The calls the answer asks for, whole: stored only with its end."
    )
    parts: AnswerParts | None = Field(
        default=None,
        description="Which model wrote which part of the answer, each with the tokens it spent on this run: stored "
        "as the answer's parts (in place of those its appends began), and its usage recorded under each part's "
        "model. A part without usage is estimated from its text. Without: the usage is recorded as one model's.",
    )


class AppendRequest(InputModel):
    offset: int = Field(ge=0, le=MAX_OFFSET, description="Length of the content (in characters) the text goes after.")
    text: str
    owner: Owner | None = Field(default=None, description="When given, the append fails unless it holds the lease.")
    lease_seconds: LeaseSeconds | None = Field(default=None, description="New lease length; the default applies.")
    model: ModelName | None = Field(
        default=None,
        description="The model that writes the text from `offset` on: when it is not the one that wrote the "
        "answer's last part (its first part is its own `model`'s), a new part begins at `offset`.",
    )
    finish: AnswerFinish | None = Field(
        default=None,
        description="End the answer with this text: it must be in progress, and its lease is released.",
    )

    @model_validator(mode="after")
    def _parts_within_text(self) -> "AppendRequest":
        length = self.offset + len(self.text)
        if self.finish is not None and any(part.offset > length for part in self.finish.parts or []):
            raise ValueError(f"a part begins after the answer's end ({length} characters)")
        return self


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

    user_id: UserId = DEFAULT_USER
    title: Title = "New chat"
    exclusive: bool = Field(
        default=False, description="Refuse the turn (404) when the session exists and is another user's."
    )


class TurnInput(InputModel, ToolFields):
    """What the answer answers: a user's question, or a tool's result (an agent's round)."""

    id: uuid.UUID | None = Field(default=None, description="Client-chosen id: retrying the turn is then safe.")
    role: Literal[MessageRole.USER, MessageRole.TOOL] = MessageRole.USER
    content: str = ""
    context: Context | None = None

    @model_validator(mode="after")
    def _tool_fields_on_their_roles(self) -> "TurnInput":
        self.check_tool_fields(self.role)
        if self.parts is not None and not self.content:
            self.content = parts_text(self.parts)
        return self


class TurnAnswer(InputModel):
    id: uuid.UUID | None = Field(default=None, description="Client-chosen id: retrying the turn is then safe.")
    conversation_key: ConversationKey | None = Field(
        default=None,
        description="A key of the conversation it answers, inputs included, by which its client's next request "
        "finds it (and `follows_added`).",
    )
    response: JSONObject | None = Field(
        default=None, description="What a Responses API client asked for besides the options (background...)."
    )
    request_key: ConversationKey | None = Field(
        default=None,
        description="A key of the request (its caller, conversation and parameters): a turn whose key an answer "
        "has already is that request retried, and gets that answer's turn back (a 200) instead of a new one, "
        "unless the answer completed more than `retry_seconds` ago (then the key passes to the new answer).",
    )
    retry_seconds: float | None = Field(
        default=None, ge=0, le=30 * 86400, description="See `request_key` (default: 60)."
    )
    model: ModelName | None = None
    options: JSONObject | None = Field(default=None, description=OPTIONS_DESCRIPTION)
    prompt: Prompt | None = Field(default=None, description=PROMPT_DESCRIPTION)


class TurnCreate(InputModel):
    session: TurnSession | None = Field(
        default=None, description="When given, the session is created if it does not exist (else 404)."
    )
    inputs: Annotated[list[TurnInput], Field(min_length=1, max_length=MAX_INPUTS)] = Field(
        description="Stored in this order, before the answer: a question, or the results of the calls it made "
        "(unless stored already: see `answer.conversation_key`)."
    )
    answer: TurnAnswer = Field(default_factory=TurnAnswer)
    owner: Owner | None = Field(
        default=None, description="When given, the answer is stored claimed by it (in progress); else pending."
    )
    lease_seconds: LeaseSeconds | None = None
    account: TurnAccount | None = Field(
        default=None, description="Whose answer it is (its usage is recorded); with budgets, refused when spent."
    )
    sent_at: UTCDatetime | None = Field(
        default=None,
        description="When its client asked: the first time this turn was sent (its messages' `sent_at`, unless "
        "later than now). A gateway that could not store it gives up on it that long after, whenever a retry of it "
        "is stored: crash recovery counts from it.",
    )
    follows_added: bool = Field(
        default=False,
        description="Its client named no session: when a session of the account's user ends with a message its "
        "client added under the answer's `conversation_key` (`MessageCreate.conversation_key`), the answer goes "
        "there, after it, and the inputs (stored already) are not stored again.",
    )


class MessageDetail(MessageRead):
    """One message, with its prompt: lists of messages (and turns, whose client sent it) leave it out, since
    it can be as long as a conversation."""

    prompt: list[JSONObject] | None = None
    response: JSONObject | None = Field(default=None, description="What a Responses API client asked for.")


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
    tool_calls: list[ToolCall] | None = Field(
        default=None, description="Stored with the answer's end, whole: they follow the text (offsets after it)."
    )
    model: str | None = None
    answer_parts: list[AnswerPart] | None = Field(
        default=None, description="Which model wrote which part, when several did: a follower names each."
    )


class ConversationFind(InputModel):
    """A client's conversation so far: the key of what its last answer answered, and that answer as resent."""

    conversation_key: ConversationKey
    user_id: UserId
    content: str
    tool_calls: list[ToolCall] | None = None
    results_of: list[str] = Field(
        default_factory=list,
        description="The calls whose results the request sends: the answer may already be followed by them "
        "(a retried round), not by anything else.",
    )


class ConversationFound(ReadModel):
    session_id: uuid.UUID
    answer_id: uuid.UUID


class TurnRead(ReadModel):
    inputs: list[MessageRead]
    answer: MessageRead


class TurnStarted(ReadModel):
    """What the gateway reads of a ``TurnRead``: its answer, as it reads every message."""

    answer: MessageDetail


class Health(ReadModel):
    status: str
