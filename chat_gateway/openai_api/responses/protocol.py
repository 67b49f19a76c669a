"""OpenAI's Responses API requests, over the gateway's durable answers (the routes: routes.py): what is served
of a request, and the Chat Completions request (the upstream's) it becomes, its input items made chat messages.

A response is an answer (``resp_<answer id>``, ids.py); its items are rendered by items.py, its object by
response_object.py and its events by events.py, all from the answer as stored, so every gateway renders them alike.
"""

from typing import Annotated, Any, TypeVar

from openai.types.responses import (
    FunctionTool,
    ResponseFormatTextConfig,
    ResponseTextConfig,
    Tool,
    ToolChoiceAllowed,
    ToolChoiceFunction,
)
from openai.types.responses.response import ToolChoice
from openai.types.responses.response_conversation_param import ResponseConversationParam
from openai.types.shared import Reasoning
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import to_jsonable_python

from chat_gateway.chat.protocol import validated
from chat_gateway.openai_api.chat_completions.protocol import CompletionRequest, OpenAIMessage
from shared import BadRequest, ErrorCode, JSONObject
from shared.resources import TOOL_NAME_MAX_LENGTH

M = TypeVar("M", bound=BaseModel)


AnyTool = Annotated[Tool, Field(discriminator="type")]  # told by its type: a refusal names its own fields


class TextConfig(ResponseTextConfig):
    """``text`` as the SDK types it, its format told by its ``type`` (so a refusal names the format's own field)."""

    format: Annotated[ResponseFormatTextConfig, Field(discriminator="type")] | None = None


def _chat_tool(tool: FunctionTool) -> JSONObject:
    function = tool.model_dump(include={"name", "description", "parameters", "strict"}, exclude_none=True)
    return {"type": "function", "function": function}


def _is_function(tool: dict[str, object]) -> bool:
    return tool.get("type") == "function" and isinstance(tool.get("name"), str)


def _chat_tool_choice(choice: ToolChoice) -> str | JSONObject | None:
    """A tool_choice as Chat Completions takes it; None for one not served here (a built-in tool's...)."""
    if isinstance(choice, str):
        return choice
    if isinstance(choice, ToolChoiceFunction):
        return {"type": "function", "function": {"name": choice.name}}
    if isinstance(choice, ToolChoiceAllowed) and all(_is_function(tool) for tool in choice.tools):
        tools = [{"type": "function", "function": {"name": tool.get("name")}} for tool in choice.tools]
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice.mode, "tools": tools}}
    return None


def _json(value: Any) -> Any:
    """An option as JSON, as it is stored and echoed: by the SDK's field names (``schema``), unset ones left out."""
    return to_jsonable_python(value, by_alias=True, exclude_none=True)


class ResponseCreate(BaseModel):
    """A Responses API request: what this gateway serves of it, translated to a chat completion upstream. Its
    options are typed by OpenAI's SDK, so what OpenAI refuses is refused here; its input items are checked as
    they are made chat messages (the SDK's item types want an id on a replayed assistant message, OpenAI not)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(default=None, max_length=200)
    input: str | list[JSONObject] = Field(min_length=1)
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, max_length=64)
    conversation: str | ResponseConversationParam | None = None
    store: bool = True
    background: bool = False
    stream: bool = False
    tools: list[AnyTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    metadata: dict[str, str] | None = None
    user: str | None = Field(default=None, max_length=255)

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, tools: list[Tool] | None) -> list[Tool] | None:
        for tool in tools or []:
            if not isinstance(tool, FunctionTool):
                raise ValueError(f"only function tools are served here, not {tool.type!r}")
            if not 0 < len(tool.name) <= TOOL_NAME_MAX_LENGTH:  # as its calls will be stored
                raise ValueError(f"a function tool's name is 1 to {TOOL_NAME_MAX_LENGTH} characters")
        return tools

    @field_validator("tool_choice")
    @classmethod
    def _function_tool_choice(cls, choice: ToolChoice | None) -> ToolChoice | None:
        if choice is None or isinstance(choice, str) or _chat_tool_choice(choice) is not None:
            return choice
        raise ValueError(f"only function tools are served here, not a tool_choice of {choice.type!r}")

    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, ResponseConversationParam):
            return self.conversation.id or None
        return self.conversation

    def asked(self, inputs: int) -> JSONObject:
        """What the answer keeps of this request for its response object (migration 0010), and how many of its
        prompt's last messages are this request's own input (``input_items``)."""
        fields = ("background", "store", "instructions", "previous_response_id", "metadata", "tools", "tool_choice")
        asked = {name: _json(getattr(self, name)) for name in fields}
        asked |= {"text": _json(self.text), "parallel_tool_calls": self.parallel_tool_calls}
        asked |= {"max_output_tokens": self.max_output_tokens, "temperature": self.temperature, "top_p": self.top_p}
        asked |= {"reasoning": _json(self.reasoning)}
        asked |= {"top_logprobs": self.top_logprobs}
        return asked | {"user": self.user, "inputs": inputs}

    def chat_options(self) -> JSONObject:
        """The Chat Completions parameters this request's options are."""
        options: JSONObject = {}
        if self.tools:
            options["tools"] = [_chat_tool(tool) for tool in self.tools if isinstance(tool, FunctionTool)]
        if self.tool_choice is not None:
            options["tool_choice"] = _chat_tool_choice(self.tool_choice)
        if self.parallel_tool_calls is not None:
            options["parallel_tool_calls"] = self.parallel_tool_calls
        if self.max_output_tokens is not None:
            options["max_tokens"] = self.max_output_tokens
        for name in ("temperature", "top_p", "user"):
            if (value := getattr(self, name)) is not None:
                options[name] = value
        if self.reasoning is not None and self.reasoning.effort is not None:
            options["reasoning_effort"] = self.reasoning.effort
        if self.top_logprobs is not None:  # logprobs are relayed to a live stream, not stored (as in Chat Completions)
            options |= {"logprobs": True, "top_logprobs": self.top_logprobs}
        if self.text is not None and self.text.format is not None and self.text.format.type != "text":
            response_format = _json(self.text.format)
            if response_format["type"] == "json_schema":  # the schema is beside the type here, inside it there
                kind = response_format.pop("type")
                response_format = {"type": kind, "json_schema": response_format}
            options["response_format"] = response_format
        return options


class InputTokensCount(ResponseCreate):
    """What ``responses.input_tokens.count`` is asked: a response's request, its input optional."""

    input: str | list[JSONObject] = Field(default_factory=list)


def _content(content: Any) -> str | list[JSONObject]:
    """An input message's content as Chat Completions takes it: text, or parts (images by URL)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest("a message's content is text or a list of parts", code=ErrorCode.INVALID_VALUE)
    parts: list[JSONObject] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image = {"url": part["image_url"]} | ({"detail": part["detail"]} if part.get("detail") else {})
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise BadRequest(f"content parts of type {kind!r} are not served here", code=ErrorCode.INVALID_VALUE)
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def input_messages(request: ResponseCreate) -> list[OpenAIMessage]:
    """The request's input items as chat messages: messages, the calls a client replays, their outputs."""
    items = [{"role": "user", "content": request.input}] if isinstance(request.input, str) else request.input
    messages: list[JSONObject] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role", "user"), "content": _content(item.get("content"))})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function"}
            call["function"] = {"name": item.get("name"), "arguments": item.get("arguments", "")}
            if messages and messages[-1]["role"] == "assistant":  # the calls of the message before them
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _content(output)
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        elif kind != "reasoning":  # a reasoning item a client replays says nothing a chat model is shown
            raise BadRequest(f"input items of type {kind!r} are not served here", code=ErrorCode.INVALID_VALUE)
    return [_checked(OpenAIMessage, message) for message in messages]


def completion_request(request: ResponseCreate, messages: list[OpenAIMessage], model: str) -> CompletionRequest:
    """The chat completion that answers the response."""
    body = {"model": model, "messages": [m.upstream() for m in messages]}
    return _checked(CompletionRequest, body | request.chat_options())


def _checked(model: type[M], data: JSONObject) -> M:
    """``data`` as ``model``: what the request's items and options make that a chat request cannot be (a call
    without its call_id, a tool_choice of no known kind...) is the client's 400, not the gateway's 500."""
    return validated(model, data, "the request cannot be served")
