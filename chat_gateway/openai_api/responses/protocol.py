"""OpenAI's Responses API requests, over the gateway's durable answers (the routes: routes.py): what is served
of a request, and the Chat Completions request (the upstream's) it becomes, its input items made chat messages.

A response is an answer (``resp_<answer id>``, ids.py); its items are rendered by items.py, its object by
response_object.py and its events by events.py, all from the answer as stored, so every gateway renders them alike.
"""

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chat_gateway.chat.protocol import validated
from chat_gateway.openai_api.chat_completions.protocol import CompletionRequest, OpenAIMessage
from shared import BadRequest, ErrorCode, JSONObject

M = TypeVar("M", bound=BaseModel)


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["function"] = Field(description="Function tools only: this gateway runs no built-in tool.")
    name: str = Field(min_length=1, max_length=128)
    parameters: JSONObject | None = None
    strict: bool | None = None
    description: str | None = None

    def as_chat(self) -> JSONObject:
        function: JSONObject = {"name": self.name}
        for name in ("description", "parameters", "strict"):
            if (value := getattr(self, name)) is not None:
                function[name] = value
        return {"type": "function", "function": function}


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"] = "text"


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: TextFormat = Field(default_factory=TextFormat)


class Reasoning(BaseModel):
    """A reasoning model's options: ``effort`` is passed on as Chat Completions' ``reasoning_effort``; its summary
    is not served (a chat completion has none to give)."""

    model_config = ConfigDict(extra="allow")

    effort: str | None = Field(default=None, max_length=32)


class ResponseCreate(BaseModel):
    """A Responses API request: what this gateway serves of it, translated to a chat completion upstream."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(default=None, max_length=200)
    input: str | list[JSONObject] = Field(min_length=1)
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, max_length=64)
    conversation: str | JSONObject | None = None
    store: bool = True
    background: bool = False
    stream: bool = False
    tools: list[JSONObject] | None = None
    tool_choice: str | JSONObject | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    text: TextOptions | None = None
    reasoning: Reasoning | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    metadata: dict[str, str] | None = None
    user: str | None = Field(default=None, max_length=255)

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, tools: list[JSONObject] | None) -> list[JSONObject] | None:
        for tool in tools or []:
            if tool.get("type") != "function":
                raise ValueError(f"only function tools are served here, not {tool.get('type')!r}")
            FunctionTool.model_validate(tool)
        return tools

    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, dict):
            return str(self.conversation.get("id") or "") or None
        return self.conversation

    def response(self, inputs: int) -> JSONObject:
        """What the answer keeps of this request for its response object (``MessageDetail.response``, migration
        0010), and how many of its prompt's last messages are this request's own input (``input_items``)."""
        fields = ("background", "store", "instructions", "previous_response_id", "metadata", "tools", "tool_choice")
        response = {name: getattr(self, name) for name in fields}
        response |= {
            "text": self.text.model_dump() if self.text else None,
            "parallel_tool_calls": self.parallel_tool_calls,
        }
        response |= {"max_output_tokens": self.max_output_tokens, "temperature": self.temperature, "top_p": self.top_p}
        response |= {"reasoning": self.reasoning.model_dump() if self.reasoning else None}
        response |= {"top_logprobs": self.top_logprobs}
        return response | {"user": self.user, "inputs": inputs}

    def chat_options(self) -> JSONObject:
        """The Chat Completions parameters this request's options are."""
        options: JSONObject = {}
        if self.tools:
            options["tools"] = [FunctionTool.model_validate(tool).as_chat() for tool in self.tools]
        if isinstance(self.tool_choice, dict) and self.tool_choice.get("type") == "function":
            options["tool_choice"] = {"type": "function", "function": {"name": self.tool_choice.get("name")}}
        elif self.tool_choice is not None:
            options["tool_choice"] = self.tool_choice
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
        if self.text is not None and self.text.format.type != "text":
            response_format = self.text.format.model_dump()
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
