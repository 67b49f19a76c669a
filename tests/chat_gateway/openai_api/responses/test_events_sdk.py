"""A response's streamed events, each kind read by the SDK's own ``ResponseStreamEvent`` (in tests only: the
stream renders them as text, its deltas from a template, and validates none)."""

import json

import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from chat_gateway.openai_api.responses.events import ResponseEvents
from shared import MessageStatus
from shared.resources import FunctionCall, ToolCall
from tests.chat_gateway.conftest import stored_message

CALL = ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Lyon"}'))
READ = TypeAdapter(ResponseStreamEvent)


def _read(stream: list[str]) -> list[ResponseStreamEvent]:
    events = []
    for event in stream:
        kind, data = event.removesuffix("\n\n").split("\n")
        events.append(READ.validate_python(json.loads(data.removeprefix("data: "))))
        assert kind == f"event: {events[-1].type}"
    return events


@pytest.mark.parametrize(
    ("ended", "last"),
    [
        ({"status": MessageStatus.COMPLETE, "tool_calls": [CALL]}, "response.completed"),
        ({"status": MessageStatus.COMPLETE, "finish_reason": "length"}, "response.incomplete"),
        ({"status": MessageStatus.FAILED, "error": "upstream failed"}, "response.failed"),
    ],
)
def test_every_event_of_a_stream_is_one_the_sdks_own_type_reads(ended: dict[str, object], last: str) -> None:
    answer = stored_message(status=MessageStatus.PENDING, response={"inputs": 1})
    events = ResponseEvents(answer, "fake-model", -1)
    logprob = {"token": "Warm", "logprob": -0.1, "top_logprobs": []}
    stream = [*events.start(), *events.text("Warm ", 5, [logprob]), *events.text("and dry.", 13)]
    stream += events.end(answer.model_copy(update={"content": "Warm and dry.", **ended}))
    read = _read(stream)
    numbers = [event.sequence_number for event in read]
    assert numbers == sorted(set(numbers))  # rising, numbered by where in the text a delta ends (events.py)
    kinds = [event.type for event in read]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.output_text.delta" in kinds
    assert kinds[-1] == last
