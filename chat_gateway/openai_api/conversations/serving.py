"""OpenAI's Conversations API over sessions: a conversation is a session (``conv_<session id>``), its items are
the session's messages, so what a Responses client puts in a conversation is seen everywhere else (sessions,
search, export, the terminal client), and the other way round."""

import uuid
from typing import Any

from chat_gateway.answers.prompt import build_messages
from chat_gateway.answers.service import Answers
from chat_gateway.answers.turns import title_from
from chat_gateway.chat.protocol import validated
from chat_gateway.openai_api.chat_completions.protocol import OpenAIMessage
from chat_gateway.openai_api.ids import Named, conversation_id
from chat_gateway.openai_api.responses.items import ItemPage, input_items, items_of, list_page
from chat_gateway.openai_api.responses.protocol import ResponseCreate, input_messages
from chat_gateway.openai_api.session_matching import conversation_key
from shared import BadRequest, ErrorCode, JSONObject, MessageRole, MessageStatus, NotFound
from shared.contract import MessageCreate, MessageDetail, SessionCreate, SessionUpdate
from shared.resources import SessionRead


def conversation_object(session: SessionRead) -> JSONObject:
    return {
        "id": conversation_id(session.id),
        "object": "conversation",
        "created_at": int(session.created_at.timestamp()),
        "metadata": session.metadata or {},
    }


def _message_of(message: OpenAIMessage) -> MessageCreate:
    """A chat message as the session stores it; one it cannot store (a call's output without its call_id) is a 400."""
    return validated(MessageCreate, _stored_as(message), "an item cannot be stored", located=False)


def _stored_as(message: OpenAIMessage) -> JSONObject:
    if message.role == "tool":
        return {
            "role": MessageRole.TOOL,
            "content": message.text(),
            "tool_call_id": message.tool_call_id,
            "name": message.name,
        }
    if message.role == "assistant":
        return {
            "role": MessageRole.ASSISTANT,
            "content": message.text(),
            "status": MessageStatus.COMPLETE,
            "tool_calls": message.calls() or None,
        }
    role = MessageRole.USER if message.role == "user" else MessageRole.SYSTEM
    parts = message.parts()
    return {"role": role, "content": "" if parts else message.text(), "parts": parts}


def _is_reference(item: JSONObject) -> bool:
    """An ``item_reference`` (its ``type`` may be left out: an item that is only an id)."""
    return item.get("type") == "item_reference" or ("type" not in item and "role" not in item and "id" in item)


async def resolve_references(answers: Answers, body: ResponseCreate, scope: str | None) -> ResponseCreate:
    """``body`` with each ``item_reference`` in its input replaced by the item it names."""
    if isinstance(body.input, str) or not any(_is_reference(item) for item in body.input):
        return body
    resolved = []
    for item in body.input:
        if not _is_reference(item):
            resolved.append(item)
        elif isinstance(reference := item.get("id"), str) and reference:
            resolved.append(await find_item(answers, reference, scope))
        else:
            raise BadRequest("an item_reference needs the id of an item", code=ErrorCode.INVALID_VALUE)
    return body.model_copy(update={"input": resolved})


async def find_item(answers: Answers, item_id: str, scope: str | None) -> JSONObject:
    """One of this gateway's items, by its id: a stored message's (``msg_``, ``fc_``, ``fco_`` and the message's id),
    or a response's own input item (the answer's id and a position); a 404 for any other."""
    return (await _located(answers, item_id, scope))[1]


async def _located(answers: Answers, item_id: str, scope: str | None) -> tuple[MessageDetail, JSONObject]:
    """The message that holds an item, and the item."""
    _, _, rest = item_id.partition("_")
    try:
        message_id = uuid.UUID(hex=rest.split("_")[0])
    except ValueError:
        raise NotFound(f"no item {item_id!r}") from None
    message = await answers.persistence.messages.get(message_id, scope)
    for item in [*items_of(message), *input_items(message)]:
        if item["id"] == item_id:
            return message, item
    raise NotFound(f"no item {item_id!r}")


async def create(answers: Answers, owner: str, scope: str | None, items: list[JSONObject], metadata: Any) -> JSONObject:
    """A new conversation (a session), with its first items."""
    messages = input_messages(ResponseCreate(input=items)) if items else []
    title = next((title_from(m.text()) for m in messages if m.role == "user" and m.text()), "New conversation")
    session = await answers.persistence.sessions.create(
        SessionCreate(user_id=owner, title=title, metadata=metadata or None), scope
    )
    await _add(answers, session, [], messages, scope)
    return conversation_object(session)


async def add_items(answers: Answers, session_id: uuid.UUID, scope: str | None, items: list[JSONObject]) -> JSONObject:
    """Items added at the conversation's end, in order, as its messages."""
    session = await answers.persistence.sessions.get(session_id, scope)  # another user's is a 404
    stored = await _stored_messages(answers, session.id)
    added = await _add(answers, session, stored, input_messages(ResponseCreate(input=items)), scope)
    return list_page(added, ItemPage(limit=len(added), order="asc"))


async def _add(
    answers: Answers,
    session: SessionRead,
    stored: list[MessageDetail],
    messages: list[OpenAIMessage],
    scope: str | None,
) -> list[JSONObject]:
    """Store ``messages`` at the end of a session that holds ``stored``; returns their items.

    A client that keeps its conversation in a conversation itself (the Agents SDK's OpenAIConversationsSession)
    adds its input, asks for a response without naming the conversation, then adds the response's output. The
    input's last message keeps the key of the whole conversation up to it, by which that response's answer is
    stored after it (persistence's start_turn); the output it adds then is that answer, already stored: it is
    not stored twice.
    """
    added: list[JSONObject] = []
    if messages and messages[0].role == "assistant" and stored and _same_answer(stored[-1], messages[0]):
        added += items_of(stored[-1])
        messages = messages[1:]
    conversation = [_as_sent(message) for message in stored if message.status == MessageStatus.COMPLETE]
    for position, message in enumerate(messages):
        create = _message_of(message)
        conversation.append(message)
        if position == len(messages) - 1 and message.role != "assistant":
            create.conversation_key = conversation_key(session.user_id, conversation)
        added += items_of(await answers.persistence.messages.create(session.id, create, scope))
    return added


def _same_answer(stored: MessageDetail, resent: OpenAIMessage) -> bool:
    """Whether ``resent`` is the stored answer as its client sends it back (its calls' arguments as JSON values)."""
    resent_calls = [call.as_resent() for call in resent.calls()]
    stored_calls = [call.as_resent() for call in stored.tool_calls or []]
    return stored.role == MessageRole.ASSISTANT and (stored.content, stored_calls) == (resent.text(), resent_calls)


def _as_sent(message: MessageDetail) -> OpenAIMessage:
    """A stored message as a client sends it back: the items of it, read as chat messages."""
    sent: JSONObject = {"role": message.role.value, "content": message.parts or message.content}
    if message.tool_calls:
        sent["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    if message.tool_call_id is not None:
        sent["tool_call_id"] = message.tool_call_id
    return OpenAIMessage.model_validate(sent)


async def _stored_messages(answers: Answers, session_id: uuid.UUID) -> list[MessageDetail]:
    """Every message of a session, oldest first."""
    history: list[MessageDetail] = []
    cursor = None
    while True:
        page, cursor = await answers.persistence.messages.history_page(session_id, cursor)
        history += page
        if cursor is None:
            break
    history.sort(key=lambda message: (message.created_at, message.id))
    return history


async def session_messages(answers: Answers, session_id: uuid.UUID, scope: str | None) -> list[OpenAIMessage]:
    """A conversation's messages as the model is shown them."""
    await answers.persistence.sessions.get(session_id, scope)  # another user's is a 404
    complete = [m for m in await _stored_messages(answers, session_id) if m.status == MessageStatus.COMPLETE]
    return [OpenAIMessage.model_validate(dict(message)) for message in build_messages(complete)]


async def list_items(answers: Answers, session_id: uuid.UUID, scope: str | None, page: ItemPage) -> JSONObject:
    """A page of the conversation's items."""
    listed = await answers.persistence.messages.list(session_id, {"limit": 200}, scope)
    messages = list(listed.items)
    cursor = listed.next_cursor
    while cursor is not None:
        listed = await answers.persistence.messages.list(session_id, {"limit": 200, "cursor": cursor}, scope)
        messages += listed.items
        cursor = listed.next_cursor
    items = [item for message in messages for item in items_of(message)]
    return list_page(items, page)


async def get(answers: Answers, session_id: uuid.UUID, scope: str | None) -> JSONObject:
    return conversation_object(await answers.persistence.sessions.get(session_id, scope))


async def update(answers: Answers, session_id: uuid.UUID, scope: str | None, metadata: Any) -> JSONObject:
    session = await answers.persistence.sessions.update(session_id, SessionUpdate(metadata=metadata), scope)
    return conversation_object(session)


async def delete(answers: Answers, conversation: Named, scope: str | None) -> JSONObject:
    await answers.persistence.sessions.delete(conversation.id, scope)
    return {"id": conversation.text, "object": "conversation.deleted", "deleted": True}


async def get_item(answers: Answers, conversation: Named, item_id: str, scope: str | None) -> JSONObject:
    """One of the conversation's items."""
    return (await _in_conversation(answers, conversation, item_id, scope))[1]


async def _in_conversation(
    answers: Answers, conversation: Named, item_id: str, scope: str | None
) -> tuple[MessageDetail, JSONObject]:
    message, item = await _located(answers, item_id, scope)
    if message.session_id != conversation.id:
        raise NotFound(f"no item {item_id!r} in conversation {conversation.text!r}")
    return message, item


async def delete_item(answers: Answers, conversation: Named, item_id: str, scope: str | None) -> JSONObject:
    """Delete one of the conversation's items: the message that holds it (an answer's text and its calls are one
    message: they go together); returns the conversation."""
    message, _ = await _in_conversation(answers, conversation, item_id, scope)
    await answers.persistence.messages.delete(message.id, scope)
    return await get(answers, conversation.id, scope)
