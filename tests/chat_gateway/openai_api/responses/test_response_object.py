"""A response's object, as its route documents it: the SDK's own ``Response``, in every state an answer is in."""

import pytest
from openai.types.responses import Response, ResponseTextConfig

from chat_gateway.openai_api.responses.protocol import ResponseCreate
from chat_gateway.openai_api.responses.response_object import response_object
from shared import CANCELLED, MessageStatus
from shared.resources import FunctionCall, ToolCall
from tests.chat_gateway.conftest import stored_message

CALL = ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Lyon"}'))
REQUEST = ResponseCreate.model_validate(
    {
        "input": "Weather in Lyon?",
        "instructions": "Be brief.",
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "city", "schema": {"type": "object"}}},
        "reasoning": {"effort": "low"},
        "metadata": {"team": "maps"},
        "max_output_tokens": 64,
    }
)
USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"status": MessageStatus.PENDING}, "queued"),
        ({"status": MessageStatus.IN_PROGRESS, "content": "Lyon is"}, "in_progress"),
        ({"status": MessageStatus.COMPLETE, "content": "Warm.", "usage": USAGE}, "completed"),
        ({"status": MessageStatus.COMPLETE, "tool_calls": [CALL], "finish_reason": "tool_calls"}, "completed"),
        ({"status": MessageStatus.COMPLETE, "content": "Wa", "finish_reason": "length"}, "incomplete"),
        ({"status": MessageStatus.FAILED, "content": "Wa", "error": "upstream failed"}, "failed"),
        ({"status": MessageStatus.FAILED, "content": "Wa", "error": CANCELLED}, "cancelled"),
    ],
)
def test_a_response_in_each_state_is_the_sdks_response(fields: dict[str, object], status: str) -> None:
    answer = stored_message(**fields, response=REQUEST.asked(1))
    for shown in (response_object(answer, "fake-model"), response_object(answer, "fake-model", snapshot=True)):
        read = Response.model_validate(shown)
        assert (read.tools[0].type, read.reasoning.effort if read.reasoning else None) == ("function", "low")
    read = Response.model_validate(response_object(answer, "fake-model"))
    assert read.status == status
    assert read.text == ResponseTextConfig.model_validate({"format": REQUEST.asked(1)["text"]["format"]})


def test_a_response_asked_nothing_but_its_input_is_the_sdks_response_with_openais_defaults() -> None:
    answer = stored_message(status=MessageStatus.COMPLETE, content="Hi.")
    read = Response.model_validate(response_object(answer, "fake-model"))
    assert (read.tool_choice, read.tools, read.parallel_tool_calls, read.output_text) == ("auto", [], True, "Hi.")
