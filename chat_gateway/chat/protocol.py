import uuid
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from shared import BadRequest, ErrorCode, InputModel, JSONObject, MessageRole, MessageStatus, ReadModel
from shared.contract import MAX_INPUTS, MessageDetail, TurnInput
from shared.identity import UserId
from shared.resources import (
    TOOL_CALL_ID_MAX_LENGTH,
    TOOL_NAME_MAX_LENGTH,
    AnswerPart,
    ContentPart,
    Context,
    ToolCall,
    parts_text,
)

Penalty = Annotated[float, Field(ge=-2, le=2)]
M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: object, what: str, *, located: bool = True) -> M:
    """``data`` as ``model``, or the client's 400 saying ``what`` (and where, if ``located``): data the gateway
    reads from a client beyond its route's own body (items made into chat messages, an imported document's
    options, a conversation as stored)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) + ": " if located else ""
        raise BadRequest(f"{what}: {where}{error['msg']}", code=ErrorCode.INVALID_VALUE) from exc


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
    logprobs: bool | None = Field(default=None, description="Relayed to the clients streaming it live; not stored.")
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: Annotated[str, StringConstraints(max_length=255)] | None = Field(
        default=None,
        description="Your end user's id (OpenAI's `user`), for your own bookkeeping: stored with the answer and "
        "passed on; it never chooses the session.",
    )

    def given(self) -> JSONObject:
        return self.model_dump(exclude_none=True)


class ToolResult(InputModel):
    """What a tool the answer called returned: stored in the session as a tool message, then answered."""

    tool_call_id: Annotated[str, StringConstraints(min_length=1, max_length=TOOL_CALL_ID_MAX_LENGTH)]
    content: str
    name: Annotated[str, StringConstraints(max_length=TOOL_NAME_MAX_LENGTH)] | None = None


class ChatRequest(InputModel):
    message: Annotated[str, StringConstraints(min_length=1)] | None = Field(
        default=None, description="The question (or `parts`, or `tool_results` alone in an agent's round)."
    )
    parts: Annotated[list[ContentPart], Field(min_length=1)] | None = Field(
        default=None, description="The question as content parts (text, image_url...), stored as sent."
    )
    tool_results: Annotated[list[ToolResult], Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="The results of the calls the session's last answer made, in order."
    )
    session_id: uuid.UUID | None = None
    user_id: UserId | None = Field(
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

    @model_validator(mode="after")
    def _something_to_answer(self) -> "ChatRequest":
        if self.message is None and self.parts is None and self.tool_results is None:
            raise ValueError("send a message, its parts, or the results of the last answer's tool calls")
        if len(self.tool_results or []) + (self.message is not None or self.parts is not None) > MAX_INPUTS:
            raise ValueError(f"a request adds at most {MAX_INPUTS} messages (tool results and a question)")
        for part in self.parts or []:
            if not isinstance(part.get("type"), str):
                raise ValueError('every content part needs a "type"')
        return self

    def text(self) -> str:
        """The question's text: what titles a new chat and counts toward its budget."""
        if self.message is not None:
            return self.message
        return parts_text(self.parts) if self.parts else ""

    def inputs(self, ids: list[uuid.UUID]) -> list[TurnInput]:
        """What the answer answers, as stored: the tool results, then the question if there is one."""
        results = [
            TurnInput(id=next_id, role=MessageRole.TOOL, content=r.content, tool_call_id=r.tool_call_id, name=r.name)
            for next_id, r in zip(ids, self.tool_results or [], strict=False)
        ]
        if self.message is None and self.parts is None:
            return results
        question = TurnInput(id=ids[len(results)], content=self.message or "", parts=self.parts, context=self.context)
        return [*results, question]


class ChatResponse(ReadModel):
    response: str
    session_id: uuid.UUID
    message_id: uuid.UUID
    status: MessageStatus
    tool_calls: list[ToolCall] | None = Field(default=None, description="The calls the answer asks for, if any.")
    answer_parts: list[AnswerPart] | None = Field(
        default=None, description="Which model wrote which part, when another model finished it (null: one did)."
    )

    @classmethod
    def of(cls, answer: MessageDetail) -> "ChatResponse":
        return cls(
            response=answer.content,
            session_id=answer.session_id,
            message_id=answer.id,
            status=answer.status,
            tool_calls=answer.tool_calls,
            answer_parts=answer.answer_parts,
        )
