"""OpenAI's Responses API wire format, over the gateway's durable answers (the routes: routes.py).

A response is an answer: ``resp_<answer id>``. Its request becomes a Chat Completions one (the upstream's),
and its object and events are rendered from the answer as stored, so every gateway renders them alike.

**Sequence numbers are a function of what is stored.** An answer's text of length ``L`` and its ``n`` calls
give these events, numbered so (a message item exists when there is text, or no call):

=====================================  =====================================
``response.created``                   0
``response.in_progress``               1
``response.output_item.added``         2 (the message)
``response.content_part.added``        3
``response.output_text.delta``         3 + the text's length after it
``response.output_text.done``          L + 4
``response.content_part.done``         L + 5
``response.output_item.done``          L + 6
a call's four events                   from L + 7 (or 2, without a message), 4 each
``response.completed`` (or failed...)  last
=====================================  =====================================

Deltas are cut after each whitespace character (however the text arrived), and every one is numbered by where
it ends: a client resuming after ``N`` gets the text from ``N - 3`` on, from any gateway, with no gap and no repeat.
"""

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chat_gateway.chat.protocol import validated
from chat_gateway.openai_api.chat_completions.protocol import CompletionRequest, OpenAIMessage
from chat_gateway.openai_api.ids import conversation_id, response_id
from shared import CANCELLED, BadRequest, ErrorCode, JSONObject, MessageStatus
from shared.contract import MessageDetail
from shared.resources import ToolCall

M = TypeVar("M", bound=BaseModel)
# The event numbers before the text's deltas (created, in_progress, the message's item and part).
BEFORE_TEXT = 3
# Where a text's deltas are cut: after each whitespace character, and at its end. Known as soon as that
# character is: nothing waits for what comes after it.
CUT_AFTER = re.compile(r"\s")


def sse(event: JSONObject) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


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

    def asked(self, inputs: int) -> JSONObject:
        """What the answer keeps of this request for its response object (migration 0010), and how many of its
        prompt's last messages are this request's own input (``input_items``)."""
        fields = ("background", "store", "instructions", "previous_response_id", "metadata", "tools", "tool_choice")
        asked = {name: getattr(self, name) for name in fields}
        asked |= {
            "text": self.text.model_dump() if self.text else None,
            "parallel_tool_calls": self.parallel_tool_calls,
        }
        asked |= {"max_output_tokens": self.max_output_tokens, "temperature": self.temperature, "top_p": self.top_p}
        asked |= {"reasoning": self.reasoning.model_dump() if self.reasoning else None}
        asked |= {"top_logprobs": self.top_logprobs}
        return asked | {"user": self.user, "inputs": inputs}

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


def input_items(answer: MessageDetail) -> list[JSONObject]:
    """The response's own input, as Responses items (from the end of its prompt, where the request's input is)."""
    count = int((answer.response or {}).get("inputs") or 0)
    own = (answer.prompt or [])[-count:] if count else []
    items: list[JSONObject] = []
    for index, message in enumerate(own):
        item_id = f"{answer.id.hex}_{index}"
        role = message.get("role")
        if role == "tool":
            output = message.get("content")
            items.append(
                {
                    "id": f"fco_{item_id}",
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id"),
                    "output": output,
                }
            )
            continue
        for position, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") or {}
            items.append(
                {
                    "id": f"fc_{item_id}_{position}",
                    "type": "function_call",
                    "call_id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments"),
                    "status": "completed",
                }
            )
        if message.get("content") or not message.get("tool_calls"):
            items.append(
                {
                    "id": f"msg_{item_id}",
                    "type": "message",
                    "role": role,
                    "status": "completed",
                    "content": item_content(message.get("content"), output=role == "assistant"),
                }
            )
    return items


def item_content(content: Any, *, output: bool = False) -> list[JSONObject]:
    """A chat message's content (text, or parts) as a Responses item's content parts."""
    text_type = "output_text" if output else "input_text"
    if isinstance(content, str):
        return [{"type": text_type, "text": content}]
    parts = []
    for part in content or []:
        if part.get("type") == "text":
            parts.append({"type": text_type, "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            # OpenAI's clients send {"url": ..., "detail": ...}; some send the URL alone.
            image = part.get("image_url")
            url, detail = (image.get("url"), image.get("detail")) if isinstance(image, dict) else (image, None)
            parts.append({"type": "input_image", "image_url": url, "detail": detail or "auto"})
    return parts


@dataclass(frozen=True)
class ItemPage:
    """Which page of a list of items: OpenAI's ``after``, ``limit`` and ``order``."""

    after: str | None = None
    limit: int = 20
    order: Literal["asc", "desc"] = "desc"


def list_page(items: list[JSONObject], page: ItemPage) -> JSONObject:
    """A page of items in OpenAI's list shape: ``order``-ed, from the one after ``after``, ``limit`` long."""
    if page.order == "desc":
        items = items[::-1]
    if page.after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(page.after) + 1 :] if page.after in ids else []
    data = items[: page.limit]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": len(items) > page.limit}


# The response object


def _status(answer: MessageDetail) -> str:
    if answer.status == MessageStatus.PENDING:
        return "queued"
    if answer.status == MessageStatus.IN_PROGRESS:
        return "in_progress"
    if answer.status == MessageStatus.FAILED:
        return "cancelled" if answer.error == CANCELLED else "failed"
    return "incomplete" if answer.finish_reason in ("length", "content_filter") else "completed"


def _message_item(answer: MessageDetail, text: str, status: str) -> JSONObject:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status != "added" else []
    item_status = "in_progress" if status in ("added", "in_progress") else status
    return {
        "id": f"msg_{answer.id.hex}",
        "type": "message",
        "role": "assistant",
        "status": item_status,
        "content": content,
    }


def _call_item(answer: MessageDetail, index: int, call: ToolCall, status: str = "completed") -> JSONObject:
    return {
        "id": f"fc_{answer.id.hex}_{index}",
        "type": "function_call",
        "call_id": call.id,
        "name": call.function.name,
        "arguments": call.function.arguments if status == "completed" else "",
        "status": status,
    }


def has_message(text: str, calls: list[ToolCall] | None) -> bool:
    return bool(text) or not calls


def output_items(answer: MessageDetail) -> list[JSONObject]:
    ended = answer.status in (MessageStatus.COMPLETE, MessageStatus.FAILED)
    items = []
    if has_message(answer.content, answer.tool_calls) and (answer.content or ended):
        status = "completed" if answer.status == MessageStatus.COMPLETE else ("incomplete" if ended else "in_progress")
        items.append(_message_item(answer, answer.content, status))
    if answer.status == MessageStatus.COMPLETE:
        items += [_call_item(answer, i, call) for i, call in enumerate(answer.tool_calls or [])]
    return items


def _usage(usage: JSONObject | None) -> JSONObject | None:
    if not usage:
        return None
    prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": int(usage.get("total_tokens", prompt + completion)),
    }


def response_object(answer: MessageDetail, model: str, *, snapshot: bool = False) -> JSONObject:
    """The response as stored (``snapshot``: as it began, for ``response.created``)."""
    asked = answer.response or {}
    status = "queued" if snapshot and answer.status == MessageStatus.PENDING else _status(answer)
    if snapshot and status not in ("queued",):
        status = "in_progress"
    error = None
    if status == "failed":
        error = {"code": "server_error", "message": answer.error or "the answer failed"}
    incomplete = None
    if status == "incomplete":
        reason = "max_output_tokens" if answer.finish_reason == "length" else "content_filter"
        incomplete = {"reason": reason}
    return {
        "id": response_id(answer.id),
        "object": "response",
        "created_at": int(answer.created_at.timestamp()),
        "status": status,
        "background": bool(asked.get("background")),
        "model": model,
        "output": [] if snapshot else output_items(answer),
        "error": error,
        "incomplete_details": incomplete,
        "instructions": asked.get("instructions"),
        "metadata": asked.get("metadata") or {},
        "previous_response_id": asked.get("previous_response_id"),
        "conversation": {"id": conversation_id(answer.session_id)},
        "parallel_tool_calls": asked.get("parallel_tool_calls")
        if asked.get("parallel_tool_calls") is not None
        else True,
        "tool_choice": asked.get("tool_choice") or "auto",
        "tools": asked.get("tools") or [],
        "temperature": asked.get("temperature"),
        "top_p": asked.get("top_p"),
        "top_logprobs": asked.get("top_logprobs"),
        "reasoning": asked.get("reasoning") or {"effort": None, "summary": None},
        "user": asked.get("user"),
        "max_output_tokens": asked.get("max_output_tokens"),
        "text": asked.get("text") or {"format": {"type": "text"}},
        "store": asked.get("store", True),
        "usage": None if snapshot else _usage(answer.usage),
        "completed_at": int(time.time()) if not snapshot and status == "completed" else None,
    }


# The events


def _event_before(after: int, answer: MessageDetail) -> int:
    """The last event given at or before ``after``. A delta is numbered by where its text ends, so a number between
    two deltas' was never given: a client naming it resumes after the delta before it, whole, rather than from
    inside the next one (whose number would then come twice, with two texts)."""
    offset = after - BEFORE_TEXT
    text = answer.content
    ended = answer.status in (MessageStatus.COMPLETE, MessageStatus.FAILED)
    if offset <= 0 or offset > len(text) or (ended and offset == len(text)) or CUT_AFTER.match(text, offset - 1):
        return after  # an event, or past the text known here
    cuts = [cut.end() for cut in CUT_AFTER.finditer(text, 0, offset)]
    return BEFORE_TEXT + (cuts[-1] if cuts else 0)


class ResponseEvents:
    """A response's events after ``starting_after``, numbered as the module's table says.

    Fed the answer's text as it grows (``text``) and then how it ended (``end``, with the answer as stored).
    """

    def __init__(self, answer: MessageDetail, model: str, starting_after: int) -> None:
        self.answer = answer
        self.model = model
        self.after = _event_before(starting_after, answer)
        self.last = starting_after  # the number of the last event given
        self.message_open = False
        self._held = ""  # text received and not sent yet: the word being written
        self._logprobs: list[JSONObject] = []  # those of the text received, for the next delta sent
        kind = "response.output_text.delta"
        self._delta_head = f'event: {kind}\ndata: {{"type": "{kind}", "sequence_number": '
        item = f'"item_id": "msg_{answer.id.hex}", "output_index": 0, "content_index": 0, "logprobs": []'
        self._delta_middle = f", {item}, " + '"delta": '
        self._received = self.text_offset()  # where the text received ends

    def text_offset(self) -> int:
        """Where in the text the events to send begin."""
        return max(0, self.after - BEFORE_TEXT)

    def _event(self, sequence: int, kind: str, **fields: Any) -> Iterator[str]:
        if sequence > self.after:
            self.last = sequence
            yield sse({"type": kind, "sequence_number": sequence, **fields})

    def start(self) -> Iterator[str]:
        if self.after >= 1:
            return
        snapshot = json.dumps(response_object(self.answer, self.model, snapshot=True))
        for sequence, kind in enumerate(("response.created", "response.in_progress")):
            if sequence > self.after:  # the one snapshot, encoded once
                self.last = sequence
                data = f'{{"type": "{kind}", "sequence_number": {sequence}, "response": {snapshot}}}'
                yield f"event: {kind}\ndata: {data}\n\n"

    def _open_message(self) -> Iterator[str]:
        if not self.message_open:
            self.message_open = True
            item = _message_item(self.answer, "", "added")
            yield from self._event(2, "response.output_item.added", output_index=0, item=item)
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield from self._event(
                3, "response.content_part.added", item_id=item["id"], output_index=0, content_index=0, part=part
            )

    def text(self, delta: str, offset: int, logprobs: list[JSONObject] | None = None) -> Iterator[str]:
        """Text that ends at ``offset`` in the answer: sent word by word, each with the whitespace after it
        (``CUT_AFTER``), so that however it arrived (an upstream's chunks, a replay's one read) it is cut alike.
        Its ``logprobs`` (live only: they are not stored) go with the next delta sent.
        """
        yield from self._open_message()
        self._logprobs += logprobs or []
        self._held += delta
        self._received = offset
        start = offset - len(self._held)
        cut = 0
        for space in CUT_AFTER.finditer(self._held):
            yield from self._delta(self._held[cut : space.end()], start + space.end())
            cut = space.end()
        self._held = self._held[cut:]

    def _delta(self, text: str, end: int) -> Iterator[str]:
        """``_event("response.output_text.delta", ...)``, rendered from a template: building and encoding the
        whole event for every delta cost a third more CPU per chunk than a Chat Completions stream's."""
        if (sequence := BEFORE_TEXT + end) > self.after:
            self.last = sequence
            if self._logprobs:
                item = {"item_id": f"msg_{self.answer.id.hex}", "output_index": 0, "content_index": 0}
                kind = "response.output_text.delta"
                yield sse(
                    {"type": kind, "sequence_number": sequence, **item, "logprobs": self._logprobs, "delta": text}
                )
                self._logprobs = []
                return
            yield self._delta_head + str(sequence) + self._delta_middle + json.dumps(text) + "}\n\n"

    def end(self, stored: MessageDetail) -> Iterator[str]:
        """The rest, once the answer has ended: the message's end, the calls, and the response's."""
        text = stored.content
        if len(text) > self._received:  # not all of it came as deltas
            yield from self.text(text[self._received :], len(text))
        if self._held:
            yield from self._delta(self._held, self._received)
            self._held = ""
        calls = (stored.tool_calls or []) if stored.status == MessageStatus.COMPLETE else []
        sequence = 2
        index = 0
        if has_message(text, calls):
            yield from self._open_message()
            end = BEFORE_TEXT + len(text)
            item_id = f"msg_{stored.id.hex}"
            status = "completed" if stored.status == MessageStatus.COMPLETE else "incomplete"
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            at = {"item_id": item_id, "output_index": 0, "content_index": 0}
            yield from self._event(end + 1, "response.output_text.done", **at, text=text, logprobs=[])
            yield from self._event(end + 2, "response.content_part.done", **at, part=part)
            item = _message_item(stored, text, status)
            yield from self._event(end + 3, "response.output_item.done", output_index=0, item=item)
            sequence, index = end + 4, 1
        for position, call in enumerate(calls):
            added = _call_item(stored, position, call, status="in_progress")
            item_id = added["id"]
            output_index = index + position
            yield from self._event(sequence, "response.output_item.added", output_index=output_index, item=added)
            yield from self._event(
                sequence + 1,
                "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=output_index,
                delta=call.function.arguments,
            )
            yield from self._event(
                sequence + 2,
                "response.function_call_arguments.done",
                item_id=item_id,
                output_index=output_index,
                arguments=call.function.arguments,
            )
            done = _call_item(stored, position, call)
            yield from self._event(sequence + 3, "response.output_item.done", output_index=output_index, item=done)
            sequence += 4
        final = response_object(stored, self.model)
        kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(final["status"])
        yield from self._event(sequence, kind or "response.failed", response=final)
