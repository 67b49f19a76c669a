import uuid
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, field_validator

from shared import InputModel, JSONObject, MessageStatus, ReadModel
from shared.contract import MessageDetail
from shared.resources import Context, ToolCall

Penalty = Annotated[float, Field(ge=-2, le=2)]


class FunctionTool(InputModel):
    """A function tool, as Chat Completions takes it; other kinds (built-in tools, custom) are refused."""

    model_config = ConfigDict(extra="allow")

    type: Literal["function"] = Field(description='Only "function" tools: this gateway runs no tool itself.')
    function: JSONObject

    @field_validator("function")
    @classmethod
    def _named(cls, function: JSONObject) -> JSONObject:
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise ValueError("a function tool needs a name")
        return function


class GenerationOptions(InputModel):
    """Chat Completions parameters passed on to the model as given, and stored with the answer.

    Stored so that whoever continues an interrupted answer (a resume, another gateway after a crash)
    continues it with the same options.
    """

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, description="For the whole answer, resumes included.")
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Like max_tokens.")
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: int | None = None
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None
    response_format: JSONObject | None = None
    reasoning_effort: Annotated[str, StringConstraints(max_length=32)] | None = None
    tools: Annotated[list[FunctionTool], Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="Function tools the model may call: its calls come back whole, stored."
    )
    tool_choice: Literal["none", "auto", "required"] | JSONObject | None = None
    parallel_tool_calls: bool | None = None

    def given(self) -> JSONObject:
        return self.model_dump(exclude_none=True)


class ChatRequest(InputModel):
    message: Annotated[str, StringConstraints(min_length=1)]
    session_id: uuid.UUID | None = None
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        default=None,
        description="Whose chat it is: with a user's credential, absent or their own; an admin names anyone "
        "(default: anonymous).",
    )
    context: Context | None = Field(
        default=None, description="RAG context for this prompt; stored with the message, shown to the model."
    )
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    options: GenerationOptions | None = Field(default=None, description="Temperature, max_tokens... for this answer.")
    stream: bool = False


class ChatResponse(ReadModel):
    response: str
    session_id: uuid.UUID
    message_id: uuid.UUID
    status: MessageStatus
    tool_calls: list[ToolCall] | None = Field(default=None, description="The calls the answer asks for, if any.")

    @classmethod
    def of(cls, answer: MessageDetail) -> "ChatResponse":
        return cls(
            response=answer.content,
            session_id=answer.session_id,
            message_id=answer.id,
            status=answer.status,
            tool_calls=answer.tool_calls,
        )
