"""OpenAI's Conversations API over sessions: a conversation is a session (``conv_<session id>``), its items are
the session's messages, so what a Responses client puts in a conversation is seen everywhere else (sessions,
search, export, the terminal client), and the other way round."""

import uuid
from typing import Any

from pydantic import ValidationError

from chat_gateway.openai_format import OpenAIMessage
from chat_gateway.responses_format import ItemPage, ResponseCreate, input_messages, item_content, list_page
from chat_gateway.service import Answers
from chat_gateway.turns import title_from
from shared import BadRequest, ErrorCode, JSONObject, MessageRole, MessageStatus, NotFound
from shared.contract import MessageCreate, SessionCreate, SessionUpdate
from shared.resources import MessageRead, SessionRead

CONVERSATION_PREFIX = "conv_"


def conversation_id(session_id: uuid.UUID) -> str:
    return f"{CONVERSATION_PREFIX}{session_id.hex}"


def session_of(conversation: str) -> uuid.UUID:
    """The session a conversation id names; one that names none is a 404, as an unknown conversation is."""
    try:
        return uuid.UUID(hex=conversation.removeprefix(CONVERSATION_PREFIX))
    except ValueError:
        raise NotFound(f"no conversation {conversation!r}") from None


def conversation_object(session: SessionRead) -> JSONObject:
    return {
        "id": conversation_id(session.id),
        "object": "conversation",
        "created_at": int(session.created_at.timestamp()),
        "metadata": session.metadata or {},
    }


def _message_of(message: OpenAIMessage) -> MessageCreate:
    """A chat message as the session stores it; one it cannot store (a call's output without its call_id) is a 400."""
    try:
        return _stored_as(message)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        raise BadRequest(f"an item cannot be stored: {problem}", code=ErrorCode.INVALID_VALUE) from exc


def _stored_as(message: OpenAIMessage) -> MessageCreate:
    if message.role == "tool":
        return MessageCreate(
            role=MessageRole.TOOL, content=message.text(), tool_call_id=message.tool_call_id, name=message.name
        )
    if message.role == "assistant":
        return MessageCreate(
            role=MessageRole.ASSISTANT,
            content=message.text(),
            status=MessageStatus.COMPLETE,
            tool_calls=message.calls() or None,
        )
    role = MessageRole.USER if message.role == "user" else MessageRole.SYSTEM
    parts = message.parts()
    return MessageCreate(role=role, content="" if parts else message.text(), parts=parts)


def items_of(message: MessageRead) -> list[JSONObject]:
    """A stored message as Responses items: a message, the calls an answer made, a tool's output."""
    hex_id = message.id.hex
    if message.role == MessageRole.TOOL:
        item = {"id": f"fco_{hex_id}", "type": "function_call_output", "call_id": message.tool_call_id}
        return [item | {"output": message.content, "status": "completed"}]
    items: list[JSONObject] = []
    if message.role == MessageRole.ASSISTANT:
        if message.content or not message.tool_calls:
            status = {MessageStatus.COMPLETE: "completed", MessageStatus.FAILED: "incomplete"}.get(
                message.status, "in_progress"
            )
            text = [part | {"annotations": []} for part in item_content(message.content, output=True)]
            items.append({"id": f"msg_{hex_id}", "type": "message", "role": "assistant", "status": status})
            items[-1]["content"] = text
        for index, call in enumerate(message.tool_calls or []):
            items.append(
                {
                    "id": f"fc_{hex_id}_{index}",
                    "type": "function_call",
                    "call_id": call.id,
                    "name": call.function.name,
                    "arguments": call.function.arguments,
                    "status": "completed",
                }
            )
        return items
    content = item_content(message.parts or message.content)
    role = "user" if message.role == MessageRole.USER else "system"
    return [{"id": f"msg_{hex_id}", "type": "message", "role": role, "status": "completed", "content": content}]


async def create(answers: Answers, owner: str, scope: str | None, items: list[JSONObject], metadata: Any) -> JSONObject:
    """A new conversation (a session), with its first items."""
    messages = input_messages(ResponseCreate(input=items)) if items else []
    title = next((title_from(m.text()) for m in messages if m.role == "user" and m.text()), "New conversation")
    session = await answers.persistence.create_session(
        SessionCreate(user_id=owner, title=title, metadata=metadata or None), scope
    )
    for message in messages:
        await answers.persistence.create_message(session.id, _message_of(message), scope)
    return conversation_object(session)


async def add_items(answers: Answers, conversation: str, scope: str | None, items: list[JSONObject]) -> JSONObject:
    """Items added at the conversation's end, in order, as its messages."""
    session_id = session_of(conversation)
    await answers.persistence.get_session(session_id, scope)  # another user's is a 404
    added: list[JSONObject] = []
    for message in input_messages(ResponseCreate(input=items)):
        stored = await answers.persistence.create_message(session_id, _message_of(message), scope)
        added += items_of(stored)
    return list_page(added, ItemPage(limit=len(added), order="asc"))


async def list_items(answers: Answers, conversation: str, scope: str | None, page: ItemPage) -> JSONObject:
    """A page of the conversation's items."""
    session_id = session_of(conversation)
    listed = await answers.persistence.list_messages(session_id, {"limit": 200}, scope)
    messages = list(listed.items)
    cursor = listed.next_cursor
    while cursor is not None:
        listed = await answers.persistence.list_messages(session_id, {"limit": 200, "cursor": cursor}, scope)
        messages += listed.items
        cursor = listed.next_cursor
    items = [item for message in messages for item in items_of(message)]
    return list_page(items, page)


async def get(answers: Answers, conversation: str, scope: str | None) -> JSONObject:
    return conversation_object(await answers.persistence.get_session(session_of(conversation), scope))


async def update(answers: Answers, conversation: str, scope: str | None, metadata: Any) -> JSONObject:
    session = await answers.persistence.update_session(
        session_of(conversation), SessionUpdate(metadata=metadata), scope
    )
    return conversation_object(session)


async def delete(answers: Answers, conversation: str, scope: str | None) -> JSONObject:
    await answers.persistence.delete_session(session_of(conversation), scope)
    return {"id": conversation, "object": "conversation.deleted", "deleted": True}
