"""Responses items (a message, a function call, a call's output), each rendered by one function wherever it is
shown: a response's output, its input items, a conversation's items; an item's status from its message's; and
the lists they are paged in.

An item's id is its message's: ``msg_<id>``, ``fc_<id>_<n>`` for its n-th call, ``fco_<id>`` for a tool's output;
a response's input items, read from its answer's prompt, are ``<answer id>_<position>`` within it.
"""

from dataclasses import dataclass
from typing import Any, Literal

from openai.types.conversations import ConversationItem
from openai.types.responses import ResponseItem
from pydantic import BaseModel

from shared import JSONObject, MessageRole, MessageStatus
from shared.contract import MessageDetail
from shared.resources import MessageRead, ToolCall


def item_status(status: MessageStatus) -> str:
    """An item's status from its message's: only a complete one's is completed; an answer that failed (or was
    cancelled) leaves its items incomplete."""
    if status == MessageStatus.COMPLETE:
        return "completed"
    return "incomplete" if status == MessageStatus.FAILED else "in_progress"


def message_item_id(message: str) -> str:
    return f"msg_{message}"


def message_item(message: str, role: Any, status: str, content: list[JSONObject]) -> JSONObject:
    return {"id": message_item_id(message), "type": "message", "role": role, "status": status, "content": content}


def call_item(
    message: str, index: int, call_id: Any, name: Any, arguments: Any, status: str = "completed"
) -> JSONObject:
    return {
        "id": f"fc_{message}_{index}",
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def stored_call_item(message: str, index: int, call: ToolCall, status: str = "completed") -> JSONObject:
    """A call as an answer stored it; ``in_progress``, before its arguments are given."""
    arguments = call.function.arguments if status == "completed" else ""
    return call_item(message, index, call.id, call.function.name, arguments, status)


def call_output_item(message: str, call_id: Any, output: Any) -> JSONObject:
    return {
        "id": f"fco_{message}",
        "type": "function_call_output",
        "call_id": call_id,
        "output": output,
        "status": "completed",
    }


def output_text(text: str) -> JSONObject:
    """An answer's text, as a response's message holds it."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _input_text_part(words: str) -> JSONObject:
    return {"type": "input_text", "text": words}


def _output_text_part(words: str) -> JSONObject:
    return {"type": "output_text", "text": words, "annotations": []}


def item_content(content: Any, *, output: bool = False) -> list[JSONObject]:
    """A chat message's content (text, or parts) as a Responses item's content parts."""
    text = _output_text_part if output else _input_text_part
    if isinstance(content, str):
        return [text(content)]
    parts = []
    for part in content or []:
        if part.get("type") == "text":
            parts.append(text(part.get("text", "")))
        elif part.get("type") == "image_url":
            # OpenAI's clients send {"url": ..., "detail": ...}; some send the URL alone.
            image = part.get("image_url")
            url, detail = (image.get("url"), image.get("detail")) if isinstance(image, dict) else (image, None)
            parts.append({"type": "input_image", "image_url": url, "detail": detail or "auto"})
    return parts


def has_message(text: str, calls: list[ToolCall] | None) -> bool:
    """Whether an answer's output has a message item: when it has text, or no call."""
    return bool(text) or not calls


def output_items(answer: MessageDetail) -> list[JSONObject]:
    """A response's output: its message (once it has text, or has ended), then its calls (once complete)."""
    ended = answer.status in (MessageStatus.COMPLETE, MessageStatus.FAILED)
    items = []
    if has_message(answer.content, answer.tool_calls) and (answer.content or ended):
        content = [output_text(answer.content)]
        items.append(message_item(answer.id.hex, "assistant", item_status(answer.status), content))
    if answer.status == MessageStatus.COMPLETE:
        items += [stored_call_item(answer.id.hex, i, call) for i, call in enumerate(answer.tool_calls or [])]
    return items


def input_items(answer: MessageDetail) -> list[JSONObject]:
    """The response's own input, as Responses items (from the end of its prompt, where the request's input is)."""
    count = int((answer.response or {}).get("inputs") or 0)
    own = (answer.prompt or [])[-count:] if count else []
    items: list[JSONObject] = []
    for index, message in enumerate(own):
        at = f"{answer.id.hex}_{index}"
        role = message.get("role")
        if role == "tool":
            items.append(call_output_item(at, message.get("tool_call_id"), message.get("content")))
            continue
        if message.get("content") or not message.get("tool_calls"):  # its text first, then its calls, as elsewhere
            content = item_content(message.get("content"), output=role == "assistant")
            items.append(message_item(at, role, "completed", content))
        for position, call in enumerate(message.get("tool_calls") or []):
            function = call.get("function") or {}
            items.append(call_item(at, position, call.get("id"), function.get("name"), function.get("arguments")))
    return items


def items_of(message: MessageRead) -> list[JSONObject]:
    """A stored message as Responses items: a message, the calls an answer made, a tool's output."""
    hex_id = message.id.hex
    if message.role == MessageRole.TOOL:
        return [call_output_item(hex_id, message.tool_call_id, message.content)]
    if message.role != MessageRole.ASSISTANT:
        role = "user" if message.role == MessageRole.USER else "system"
        return [message_item(hex_id, role, "completed", item_content(message.parts or message.content))]
    items: list[JSONObject] = []
    if message.content or not message.tool_calls:
        text = item_content(message.content, output=True)
        items.append(message_item(hex_id, "assistant", item_status(message.status), text))
    items += [stored_call_item(hex_id, index, call) for index, call in enumerate(message.tool_calls or [])]
    return items


class _Page(BaseModel):
    """A page of items as the SDK types it (``ResponseItemList``...), but an empty one's first and last ids are null:
    it has none."""

    object: Literal["list"]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ItemList(_Page):
    """A page of a response's input items."""

    data: list[ResponseItem]


class ConversationItems(_Page):
    """A page of a conversation's items."""

    data: list[ConversationItem]


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
