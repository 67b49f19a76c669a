"""Responses items, each kind rendered by one function wherever it is shown."""

import uuid
from datetime import UTC, datetime

import pytest
from openai.types.responses import ResponseItem
from pydantic import TypeAdapter

from chat_gateway.openai_api.responses.items import (
    ConversationItems,
    ItemList,
    ItemPage,
    input_items,
    item_status,
    items_of,
    list_page,
    output_items,
)
from shared import MessageRole, MessageStatus
from shared.contract import MessageDetail
from shared.resources import FunctionCall, ToolCall

AT = datetime(2026, 1, 1, tzinfo=UTC)
CALL = ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Lyon"}'))


def _answer(status: MessageStatus, content: str, calls: list[ToolCall] | None = None) -> MessageDetail:
    fields = {"id": uuid.UUID(int=7), "session_id": uuid.UUID(int=9), "role": MessageRole.ASSISTANT}
    fields |= {"content": content, "status": status, "tool_calls": calls, "created_at": AT, "updated_at": AT}
    fields |= {"context": None, "rating": None, "model": None, "options": None, "attempts": 1, "version": 1}
    fields |= {"lease_owner": None, "lease_expires_at": None, "sent_at": AT}
    fields |= {"error": None, "finish_reason": None, "usage": None}
    return MessageDetail.model_validate(fields)


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        (MessageStatus.PENDING, "in_progress"),
        (MessageStatus.IN_PROGRESS, "in_progress"),
        (MessageStatus.COMPLETE, "completed"),
        (MessageStatus.FAILED, "incomplete"),
    ],
)
def test_an_items_status_is_its_messages(status: MessageStatus, shown: str) -> None:
    assert item_status(status) == shown
    [message] = items_of(_answer(status, "Hi"))
    assert message["status"] == shown


def test_a_complete_answers_output_and_conversation_items_are_the_same_items() -> None:
    answer = _answer(MessageStatus.COMPLETE, "Let me look.", [CALL])
    output, stored = output_items(answer), items_of(answer)
    assert (
        [item["id"] for item in output]
        == [item["id"] for item in stored]
        == [
            f"msg_{answer.id.hex}",
            f"fc_{answer.id.hex}_0",
        ]
    )
    assert (
        output[1]
        == stored[1]
        == {
            "id": f"fc_{answer.id.hex}_0",
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Lyon"}',
            "status": "completed",
        }
    )


def test_a_failed_answer_shows_its_text_incomplete_and_none_of_its_calls() -> None:
    [message] = output_items(_answer(MessageStatus.FAILED, "Let me", [CALL]))
    assert (message["type"], message["status"], message["content"][0]["text"]) == ("message", "incomplete", "Let me")


def test_a_responses_input_items_are_the_last_messages_of_its_prompt() -> None:
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": None, "tool_calls": [CALL.model_dump()]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
    ]
    answer = _answer(MessageStatus.COMPLETE, "Warm.").model_copy(update={"prompt": prompt, "response": {"inputs": 2}})
    items = input_items(answer)
    assert [(item["type"], item["id"]) for item in items] == [
        ("function_call", f"fc_{answer.id.hex}_0_0"),
        ("function_call_output", f"fco_{answer.id.hex}_1"),
    ]
    assert items[1]["output"] == "18°C"


def test_every_item_is_one_the_openai_sdks_own_type_reads() -> None:
    """Input items, output items and conversation items, each kind, validated as the SDK's ``ResponseItem``: an
    input item's tool output had no status and an assistant's text no annotations, both required there."""
    prompt = [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {"role": "assistant", "content": "Looking.", "tool_calls": [CALL.model_dump()]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
    ]
    answer = _answer(MessageStatus.COMPLETE, "Warm.", [CALL]).model_copy(update={"prompt": prompt})
    answer = answer.model_copy(update={"response": {"inputs": 3}})
    tool = answer.model_copy(update={"role": MessageRole.TOOL, "tool_call_id": "call_1", "content": "18°C"})
    question = answer.model_copy(update={"role": MessageRole.USER, "content": "Weather?", "tool_calls": None})
    items = input_items(answer) + output_items(answer) + items_of(answer) + items_of(tool) + items_of(question)
    read = TypeAdapter(list[ResponseItem]).validate_python(items)
    assert [item.type for item in read[:4]] == ["message", "message", "function_call", "function_call_output"]
    assert len(read) == len(items) == 10


@pytest.mark.parametrize("after", [None, "nothing"])
def test_a_page_of_items_is_the_sdks_list_its_ids_null_when_empty(after: str | None) -> None:
    items = items_of(_answer(MessageStatus.COMPLETE, "Let me look.", [CALL]))
    page = list_page(items, ItemPage(after=after, limit=1))
    for documented in (ItemList, ConversationItems):
        read = documented.model_validate(page)
        assert read.has_more is (after is None)
        assert read.first_id == read.last_id == (f"fc_{uuid.UUID(int=7).hex}_0" if after is None else None)
