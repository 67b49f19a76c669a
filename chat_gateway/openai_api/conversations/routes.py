"""OpenAI's Conversations API: a conversation is a session, its items the session's messages (serving.py). Its
answers are documented by the SDK's types, rendered as dicts (not validated on the way out: the tests do)."""

from typing import Annotated

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from openai.types.conversations import Conversation, ConversationDeletedResource, ConversationItem
from pydantic import BaseModel, Field

from chat_gateway.deps import AnswersDep, CallerDep, ConversationPath, ItemPageDep
from chat_gateway.openai_api.chat_completions.protocol import ERROR_RESPONSES, PREFIX
from chat_gateway.openai_api.conversations import serving as items
from chat_gateway.openai_api.responses.items import ConversationItems
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


@router.post("", response_model=Conversation)
async def create_conversation(body: ConversationCreate, caller: CallerDep, answers: AnswersDep) -> JSONResponse:
    """Start a conversation (a session), with its first items."""
    return JSONResponse(await items.create(answers, caller.owner(None), caller.user_id, body.items, body.metadata))


@router.get("/{conversation_id}", response_model=Conversation)
async def get_conversation(conversation: ConversationPath, caller: CallerDep, answers: AnswersDep) -> JSONResponse:
    """A conversation."""
    return JSONResponse(await items.get(answers, conversation.id, caller.user_id))


@router.post("/{conversation_id}", response_model=Conversation)
async def update_conversation(
    conversation: ConversationPath, body: ConversationUpdate, caller: CallerDep, answers: AnswersDep
) -> JSONResponse:
    """Replace a conversation's metadata."""
    return JSONResponse(await items.update(answers, conversation.id, caller.user_id, body.metadata))


@router.delete("/{conversation_id}", response_model=ConversationDeletedResource)
async def delete_conversation(conversation: ConversationPath, caller: CallerDep, answers: AnswersDep) -> JSONResponse:
    """Delete a conversation (the session and all its messages)."""
    return JSONResponse(await items.delete(answers, conversation, caller.user_id))


@router.get("/{conversation_id}/items", response_model=ConversationItems)
async def list_items(
    conversation: ConversationPath, caller: CallerDep, answers: AnswersDep, page: ItemPageDep
) -> JSONResponse:
    """A conversation's items, a page at a time."""
    return JSONResponse(await items.list_items(answers, conversation.id, caller.user_id, page))


@router.post("/{conversation_id}/items", response_model=ConversationItems)
async def add_items(
    conversation: ConversationPath, body: ItemsCreate, caller: CallerDep, answers: AnswersDep
) -> JSONResponse:
    """Add items at a conversation's end."""
    return JSONResponse(await items.add_items(answers, conversation.id, caller.user_id, body.items))


@router.get("/{conversation_id}/items/{item_id}", response_model=ConversationItem)
async def get_item(
    conversation: ConversationPath, item_id: str, caller: CallerDep, answers: AnswersDep
) -> JSONResponse:
    """One of a conversation's items."""
    return JSONResponse(await items.get_item(answers, conversation, item_id, caller.user_id))


@router.delete("/{conversation_id}/items/{item_id}", response_model=Conversation)
async def delete_item(
    conversation: ConversationPath, item_id: str, caller: CallerDep, answers: AnswersDep
) -> JSONResponse:
    """Delete an item (the message that holds it); returns the conversation."""
    return JSONResponse(await items.delete_item(answers, conversation, item_id, caller.user_id))
