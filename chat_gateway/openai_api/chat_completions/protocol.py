"""OpenAI's Chat Completions wire format: requests, chunks, completions and errors, exactly as OpenAI's clients
read them (the official SDK's types are the reference). The routes are in routes.py."""

import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, cast

from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError
from starlette.responses import JSONResponse, Response
from starlette.types import Scope

from chat_gateway.chat.protocol import ChatRequest, GenerationOptions, validated
from shared import BadRequest, ErrorCode, JSONObject
from shared.contract import MAX_INPUTS, MessageDetail
from shared.resources import TOOL_CALL_ID_MAX_LENGTH, TOOL_NAME_MAX_LENGTH, FunctionCall, ToolCall

PREFIX = "/v1"


class OpenAIError(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error, api_error...")
    param: str | None = None
    code: str | None = Field(default=None, description="This gateway's code, as in its other routes' errors.")


class OpenAIErrorBody(BaseModel):
    """Errors under /v1, in OpenAI's shape, so OpenAI clients raise their usual exceptions."""

    error: OpenAIError


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": OpenAIErrorBody, "description": "Refused (a 422 is a 400 here, as in OpenAI's API)."},
    "5XX": {"model": OpenAIErrorBody, "description": "Unavailable (503: retry) or the answer failed (502)."},
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(max_length=TOOL_NAME_MAX_LENGTH)
    arguments: str


class OpenAIToolCall(BaseModel):
    """A call an assistant message of the client's conversation made: checked here, so a malformed one is a 400."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=TOOL_CALL_ID_MAX_LENGTH)
    type: Literal["function"] = "function"
    function: OpenAIFunction


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1, max_length=64)


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(default=None, max_length=TOOL_CALL_ID_MAX_LENGTH)
    name: str | None = Field(default=None, max_length=TOOL_NAME_MAX_LENGTH)
    tool_calls: list[OpenAIToolCall] | None = Field(default=None, max_length=MAX_INPUTS)

    @model_validator(mode="after")
    def _tool_results_name_their_call(self) -> "OpenAIMessage":
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return self

    @field_validator("content")
    @classmethod
    def _typed_parts(cls, content: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        for part in content if isinstance(content, list) else []:
            ContentPart.model_validate(part)  # every part says what it is
        return content

    def upstream(self) -> dict[str, Any]:
        """The message as the upstream is sent it: as given, but an assistant's missing or null ``content`` is
        sent as "". OpenAI takes all three; llama-cpp-python's server refuses null and its function-calling
        template breaks its stream without the key (answers/prompt.py builds a stored history's messages alike)."""
        message = self.model_dump(exclude_none=True)
        if self.role == "assistant":
            message.setdefault("content", "")
        return message

    def calls(self) -> list[ToolCall]:
        """The calls, as a stored answer holds them."""
        return [
            ToolCall(id=call.id, function=FunctionCall(name=call.function.name, arguments=call.function.arguments))
            for call in self.tool_calls or []
        ]

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""

    def parts(self) -> list[dict[str, Any]] | None:
        """A user's content parts, when they hold more than text (an image): kept as sent."""
        if isinstance(self.content, list) and any(part.get("type") != "text" for part in self.content):
            return self.content
        return None


def called_tools(messages: list[OpenAIMessage]) -> dict[str, str]:
    """The tool each call of the conversation's assistant messages named, by call id: what a tool message
    (which OpenAI's clients send without a name) is stored with, so it is shown and found by its tool."""
    return {call.id: call.function.name for message in messages for call in message.tool_calls or []}


def new_inputs(messages: list[OpenAIMessage]) -> tuple[OpenAIMessage | None, list[OpenAIMessage]]:
    """What a conversation adds since its last assistant message, which the answer answers: its last message
    if it is a question, and the tool results just before it (an agent's round), in order."""
    question = messages[-1] if messages[-1].role == "user" else None
    end = len(messages) - (question is not None)
    start = end
    while start > 0 and messages[start - 1].role == "tool":
        start -= 1
    results = messages[start:end]
    if len(results) + (question is not None) > MAX_INPUTS:
        raise BadRequest(
            f"a request adds at most {MAX_INPUTS} messages (tool results and a question) to its conversation",
            code=ErrorCode.INVALID_VALUE,
        )
    if question is None and not results:
        raise BadRequest(
            "the last message must be a user message, or the results of the last answer's tool calls",
            code=ErrorCode.INVALID_VALUE,
        )
    if question is not None and not question.text() and question.parts() is None:
        raise BadRequest("the last message, a user message, has no content", code=ErrorCode.INVALID_VALUE)
    for result in results:
        if not result.tool_call_id:
            raise BadRequest(
                "a tool message needs the tool_call_id of the call it answers", code=ErrorCode.INVALID_VALUE
            )
    return question, results


def chat_request(
    body: "CompletionRequest",
    question: OpenAIMessage | None,
    results: list[OpenAIMessage],
    session_id: uuid.UUID | None,
    user_id: str | None,
    model: str,
) -> ChatRequest:
    """The chat a Chat Completions request asks for: what it adds to its conversation, in our terms."""
    tools = called_tools(body.messages) if results else {}
    tool_results = [
        {
            "tool_call_id": result.tool_call_id or "",
            "content": result.text(),
            "name": result.name or tools.get(result.tool_call_id or ""),
        }
        for result in results
    ]
    chat = {
        "message": question.text() if question is not None and question.parts() is None else None,
        "parts": question.parts() if question is not None else None,
        "tool_results": tool_results or None,
        "session_id": session_id,
        "user_id": user_id,
        "model": model,
        "options": body.options(),
    }
    # What this request's fields allow, our stored messages may not.
    return validated(ChatRequest, chat, "the conversation cannot be stored", located=False)


class StreamOptions(BaseModel):
    include_usage: bool = False


# Parameters that would change what an answer is (several choices, audio...): the gateway stores and relays
# one answer (text and tool calls), so it refuses them rather than answer something else than asked.
_UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (lambda n: n != 1, "one choice per request is supported: n must be 1"),
    "functions": (bool, "the legacy `functions` parameter is not supported: send `tools`"),
    "modalities": (lambda kinds: any(kind != "text" for kind in kinds), "only text output is supported"),
    "audio": (lambda _: True, "only text output is supported"),
}


class CompletionRequest(GenerationOptions):
    """A Chat Completions request: its generation options are passed on; other parameters are ignored
    (``store``, ``parallel_tool_calls``...) or refused when they ask for more than one text answer."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(default=None, max_length=200)
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    metadata: dict[str, str] | None = None
    n: int | None = None
    functions: list[Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None

    @field_validator(*_UNSUPPORTED)
    @classmethod
    def _supported(cls, value: Any, info: ValidationInfo) -> Any:
        is_unsupported, reason = _UNSUPPORTED[str(info.field_name)]
        if value is not None and is_unsupported(value):
            raise PydanticCustomError("unsupported_parameter", reason)
        return value

    def options(self) -> GenerationOptions | None:
        given = self.model_dump(include=set(GenerationOptions.model_fields), exclude_none=True)
        return GenerationOptions.model_validate(given) if given else None

    def prompt(self) -> list[ChatCompletionMessageParam]:
        """The messages as the upstream is sent them (``OpenAIMessage.upstream``)."""
        return cast(list[ChatCompletionMessageParam], [message.upstream() for message in self.messages])


def completion_id(message_id: uuid.UUID) -> str:
    return f"chatcmpl-{message_id.hex}"


def sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


class ChunkFormat:
    """The ``chat.completion.chunk`` events of one streamed answer."""

    def __init__(self, message_id: uuid.UUID, model: str, include_usage: bool) -> None:
        self.base = {"id": completion_id(message_id), "object": "chat.completion.chunk", "created": int(time.time())}
        self.include_usage = include_usage
        self.written_by(model)

    def written_by(self, model: str) -> None:
        """The chunks from here on are ``model``'s (the answer went on on another model mid-answer)."""
        self.base["model"] = model
        # A text chunk is an empty one rendered around its content: building and encoding the whole dict
        # for every chunk cost a tenth of the relay's CPU (docs/benchmarks.md).
        self._head, _, self._tail = self.chunk({"content": "\0"}).rpartition(json.dumps("\0"))

    def chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None, logprobs: list[JSONObject] | None = None
    ) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": _logprobs(logprobs), "finish_reason": finish_reason}
        return sse(self.base | {"choices": [choice]} | ({"usage": None} if self.include_usage else {}))

    def text(self, text: str, logprobs: list[JSONObject] | None = None) -> str:
        """``chunk({"content": text})``, rendered faster (but with logprobs)."""
        if logprobs:
            return self.chunk({"content": text}, logprobs=logprobs)
        return self._head + json.dumps(text) + self._tail

    def tool_call(self, index: int, call: ToolCall) -> str:
        """One whole call, in one delta: OpenAI's clients gather a call's deltas by ``index``."""
        return self.chunk({"tool_calls": [{"index": index, **call.model_dump()}]})

    def usage(self, usage: dict[str, int]) -> str:
        return sse(self.base | {"choices": [], "usage": usage or None})


def _logprobs(tokens: list[JSONObject] | None) -> JSONObject | None:
    return {"content": tokens, "refusal": None} if tokens else None


def completion(answer: MessageDetail, model: str, logprobs: list[JSONObject] | None = None) -> dict[str, Any]:
    """A whole answer as a ``chat.completion``, naming ``model``: as the answer is stored, the model asked for (an
    alias resolved), never the name its upstream reported (chat_gateway/answers/parts.py)."""
    return {
        "id": completion_id(answer.id),
        "object": "chat.completion",
        "created": int(answer.created_at.timestamp()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": _message(answer),
                "logprobs": _logprobs(logprobs),
                "finish_reason": answer.finish_reason or "stop",
            }
        ],
        "usage": answer.usage,
    } | _parts(answer)


def _parts(answer: MessageDetail) -> dict[str, Any]:
    """An answer several models wrote names the first as its ``model``, and all in ``answer_parts`` (ours: OpenAI's
    clients keep a field they do not know)."""
    if not answer.answer_parts:
        return {}
    return {"answer_parts": [{"model": part.model, "offset": part.offset} for part in answer.answer_parts]}


def _message(answer: MessageDetail) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None}
    if answer.tool_calls:
        # As OpenAI answers a call without text: no content at all, rather than an empty one.
        message["content"] = answer.content or None
        message["tool_calls"] = [call.model_dump() for call in answer.tool_calls]
    return message


def answer_failed(error: str | None) -> dict[str, Any]:
    """The error body of an answer that failed (a 502, or the last event of a stream)."""
    return {"error": {"message": f"the answer failed: {error}", "type": "api_error", "param": None, "code": None}}


def reshape_under_v1(scope: Scope, response: Response) -> Response:
    """An error in the one shape, in OpenAI's ({"error": {...}}) under /v1, so OpenAI clients understand it."""
    if not scope["path"].startswith(PREFIX + "/"):
        return response
    ours = json.loads(bytes(response.body))
    status = 400 if response.status_code == 422 else response.status_code
    error = {
        "message": ours["detail"],
        "type": ERROR_TYPES.get(status, "api_error"),
        "param": None,
        "code": ours["code"],
    }
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    return JSONResponse({"error": error}, status_code=status, headers=headers)
