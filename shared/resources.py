"""Sessions and messages as persistence serves them: the gateway relays the same shapes to its clients."""

import itertools
import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AliasChoices, BaseModel, Field, StringConstraints

from shared.enums import MessageRole, MessageStatus
from shared.schemas import JSONObject, ReadModel

Context = JSONObject | list[Any]
# No content is longer: a PostgreSQL text holds at most 1 GB. Larger numbers would not even be an int4 to it.
MAX_OFFSET = 2**30
# The columns' sizes: a model's API can send longer ones, which the gateway clips rather than lose an answer.
MODEL_MAX_LENGTH = 200
FINISH_REASON_MAX_LENGTH = 64
TOOL_NAME_MAX_LENGTH = 128
TOOL_CALL_ID_MAX_LENGTH = 255
ModelName = Annotated[str, StringConstraints(max_length=MODEL_MAX_LENGTH)]
FinishReason = Annotated[str, StringConstraints(max_length=FINISH_REASON_MAX_LENGTH)]
T = TypeVar("T")


class Page(ReadModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page.")


class SessionRead(ReadModel):
    id: uuid.UUID
    user_id: str
    title: str
    is_favorite: bool
    # The ORM attribute is metadata_ ("metadata" is taken by SQLAlchemy).
    metadata: JSONObject | None = Field(validation_alias=AliasChoices("metadata_", "metadata"))
    created_at: datetime
    updated_at: datetime


class FunctionCall(BaseModel):
    name: str = Field(min_length=1, max_length=TOOL_NAME_MAX_LENGTH)
    arguments: str = Field(description="As the model wrote them: usually JSON, stored and relayed unparsed.")


class ToolCall(BaseModel):
    """A call an assistant message asks its client to make, in OpenAI's Chat Completions shape."""

    id: str = Field(min_length=1, max_length=TOOL_CALL_ID_MAX_LENGTH)
    type: Literal["function"] = "function"
    function: FunctionCall

    def as_resent(self) -> tuple[str, str, Any]:
        """What stays the same when a client sends the call back: its id, its name, and its arguments as a JSON
        value. Clients re-serialize them (compact, with \\u escapes, keys in another order): the text is the
        model's, the value is the call."""
        return self.id, self.function.name, json_value(self.function.arguments)


class AnswerPart(BaseModel):
    """The part of an answer's content from ``offset`` to the next part's offset, written by ``model``: an answer
    whose upstream failed mid-answer is finished on another model, from its saved text."""

    model: ModelName
    offset: int = Field(ge=0, le=MAX_OFFSET, description="Where the part begins in the content, in characters.")
    usage: JSONObject | None = Field(
        default=None, description="The tokens its model spent on it, as the gateway counted them (null: none)."
    )


def _in_order(parts: list[AnswerPart]) -> list[AnswerPart]:
    for before, after in itertools.pairwise(parts):
        if after.offset <= before.offset:
            raise ValueError("parts must be in the order of their offsets, each after the last")
    return parts


# An answer passed from model to model that many times is a gateway's loop, not a failover.
MAX_ANSWER_PARTS = 64
AnswerParts = Annotated[list[AnswerPart], Field(min_length=1, max_length=MAX_ANSWER_PARTS), AfterValidator(_in_order)]


def json_value(text: str) -> str:
    """``text`` as the JSON value it writes (objects with their keys sorted), or as itself if it is not JSON."""
    try:
        return json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError):  # not JSON, or nested past what a call's arguments are
        return text


ContentPart = Annotated[
    JSONObject,
    Field(
        description='A part of a user message as OpenAI\'s clients send it: {"type": "text", "text": ...}, '
        '{"type": "image_url", "image_url": {"url": ...}}...'
    ),
]


def parts_text(parts: list[JSONObject]) -> str:
    """The text of a message sent as parts: what its ``content`` holds, and what search finds."""
    return "".join(str(part.get("text", "")) for part in parts if part.get("type") == "text")


class ToolFields(BaseModel):
    """What a message of an agent's conversation holds besides its text, checked where it is written."""

    parts: list[ContentPart] | None = Field(default=None, description="A user message sent as content parts.")
    tool_calls: list[ToolCall] | None = Field(default=None, description="The calls an assistant message asks for.")
    tool_call_id: str | None = Field(
        default=None, max_length=TOOL_CALL_ID_MAX_LENGTH, description="The call a tool message answers."
    )
    name: str | None = Field(
        default=None, max_length=TOOL_NAME_MAX_LENGTH, description="The tool that answered, on a tool message."
    )

    def check_tool_fields(self, role: MessageRole) -> None:
        """Each field on the role that has it: a tool message answers a call; only assistants call."""
        if self.tool_calls and role != MessageRole.ASSISTANT:
            raise ValueError("tool_calls are for assistant messages only")
        if role == MessageRole.TOOL and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        if role != MessageRole.TOOL and (self.tool_call_id is not None or self.name is not None):
            raise ValueError("tool_call_id and name are for tool messages only")
        if self.parts is not None and role not in (MessageRole.USER, MessageRole.SYSTEM):
            raise ValueError("content parts are for user and system messages only")
        for part in self.parts or []:
            if not isinstance(part.get("type"), str):
                raise ValueError('every content part needs a "type"')

    def tool_names(self) -> str | None:
        """The words search finds a message by besides its text."""
        names = [call.function.name for call in self.tool_calls or []] + ([self.name] if self.name else [])
        return " ".join(names) or None


class MessageRead(ReadModel, ToolFields):
    id: uuid.UUID
    session_id: uuid.UUID
    role: MessageRole
    content: str
    context: Context | None
    status: MessageStatus
    error: str | None
    rating: bool | None
    model: str | None
    finish_reason: str | None
    usage: JSONObject | None
    options: JSONObject | None
    answer_parts: list[AnswerPart] | None = Field(
        default=None,
        description="Which model wrote which part of an answer finished on another model than it began with "
        "(absent: one model wrote it all).",
        exclude_if=lambda parts: parts is None,
    )
    attempts: int
    version: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    sent_at: datetime
    created_at: datetime
    updated_at: datetime


class SearchHit(ReadModel):
    kind: Literal["message", "session"] = Field(description="A message's text matched, or a session's title.")
    session_id: uuid.UUID
    message_id: uuid.UUID | None
    title: str
    role: MessageRole | None
    snippet: str = Field(description="The matching text, matched words between ** and **.")
    rank: float = Field(description="Relevance: higher is better (only compare within one result list).")
    created_at: datetime
