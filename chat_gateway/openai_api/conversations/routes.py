"""OpenAI's Conversations API: a conversation is a session, its items the session's messages (serving.py)."""

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from chat_gateway.deps import AnswersDep, CallerDep, ConversationPath, ItemPageDep
from chat_gateway.openai_api.chat_completions.protocol import ERROR_RESPONSES, PREFIX
from chat_gateway.openai_api.conversations import serving as items
from shared import JSONObject

router = APIRouter(prefix=f"{PREFIX}/conversations", tags=["OpenAI-compatible"], responses=ERROR_RESPONSES)

Metadata = Annotated[dict[str, str], Field(max_length=16)]


class ConversationCreate(BaseModel):
    items: Annotated[list[JSONObject], Field(max_length=20)] = []
    metadata: Metadata | None = None


class ConversationUpdate(BaseModel):
    metadata: Metadata


class ItemsCreate(BaseModel):
    items: Annotated[list[JSONObject], Field(min_length=1, max_length=20)]


@router.post("")
async def create_conversation(body: ConversationCreate, caller: CallerDep, answers: AnswersDep) -> dict[str, Any]:
    """Start a conversation (a session), with its first items."""
    return await items.create(answers, caller.owner(None), caller.scope(), body.items, body.metadata)


@router.get("/{conversation_id}")
async def get_conversation(conversation: ConversationPath, caller: CallerDep, answers: AnswersDep) -> dict[str, Any]:
    """A conversation."""
    return await items.get(answers, conversation.id, caller.scope())


@router.post("/{conversation_id}")
async def update_conversation(
    conversation: ConversationPath, body: ConversationUpdate, caller: CallerDep, answers: AnswersDep
) -> dict[str, Any]:
    """Replace a conversation's metadata."""
    return await items.update(answers, conversation.id, caller.scope(), body.metadata)


@router.delete("/{conversation_id}")
async def delete_conversation(conversation: ConversationPath, caller: CallerDep, answers: AnswersDep) -> dict[str, Any]:
    """Delete a conversation (the session and all its messages)."""
    return await items.delete(answers, conversation, caller.scope())


@router.get("/{conversation_id}/items")
async def list_items(
    conversation: ConversationPath, caller: CallerDep, answers: AnswersDep, page: ItemPageDep
) -> dict[str, Any]:
    """A conversation's items, a page at a time."""
    return await items.list_items(answers, conversation.id, caller.scope(), page)


@router.post("/{conversation_id}/items")
async def add_items(
    conversation: ConversationPath, body: ItemsCreate, caller: CallerDep, answers: AnswersDep
) -> dict[str, Any]:
    """Add items at a conversation's end."""
    return await items.add_items(answers, conversation.id, caller.scope(), body.items)


@router.get("/{conversation_id}/items/{item_id}")
async def get_item(
    conversation: ConversationPath, item_id: str, caller: CallerDep, answers: AnswersDep
) -> dict[str, Any]:
    """One of a conversation's items."""
    return await items.get_item(answers, conversation, item_id, caller.scope())


@router.delete("/{conversation_id}/items/{item_id}")
async def delete_item(
    conversation: ConversationPath, item_id: str, caller: CallerDep, answers: AnswersDep
) -> dict[str, Any]:
    """Delete an item (the message that holds it); returns the conversation."""
    return await items.delete_item(answers, conversation, item_id, caller.scope())
