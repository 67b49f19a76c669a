"""A response's events (chat_gateway/openai_api/responses/events.py): numbered from what is stored, so that
however the text arrived, and from whichever event a client resumes, it gets the same events."""

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chat_gateway.openai_api.responses.events import ResponseEvents
from shared import MessageStatus
from shared.contract import MessageDetail
from shared.resources import FunctionCall, ToolCall
from tests.chat_gateway.conftest import stored_message

TEXT = "Lyon is in France.\nIt has two rivers."
CALLS = [
    ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Lyon"}')),
    ToolCall(id="call_2", function=FunctionCall(name="get_time", arguments="{}")),
]


def _parsed(rendered: Iterator[str]) -> list[dict[str, Any]]:
    events = []
    for event in rendered:
        head, data = event.removesuffix("\n\n").split("\n")
        parsed = json.loads(data.removeprefix("data: "))
        assert head == f"event: {parsed['type']}"
        events.append(parsed)
    return events


def _stream(stored: MessageDetail, chunks: list[str], starting_after: int = -1) -> list[dict[str, Any]]:
    """The events of ``stored`` after ``starting_after``, its text arriving in ``chunks``."""
    started = stored.model_copy(update={"content": "", "status": MessageStatus.IN_PROGRESS, "tool_calls": None})
    if starting_after >= 0:
        started = stored  # a client resuming an answer that has ended: its text is all read at once
    events = ResponseEvents(started, "fake-model", starting_after)
    rendered = list(events.start())
    offset = events.text_offset()
    for chunk in chunks:
        offset += len(chunk)
        rendered += events.text(chunk, offset)
    rendered += events.end(stored)
    return _parsed(iter(rendered))


def _answer(content: str = TEXT, status: MessageStatus = MessageStatus.COMPLETE, **fields: Any) -> MessageDetail:
    return stored_message(content=content, status=status, finish_reason="stop", **fields)


def test_a_whole_stream_is_numbered_as_the_table_says_and_cut_after_each_whitespace() -> None:
    events = _stream(_answer(), ["Lyon is in Fr", "ance.\nIt has two", " rivers."])
    length = len(TEXT)
    assert [(e["sequence_number"], e["type"]) for e in events if e["type"] != "response.output_text.delta"] == [
        (0, "response.created"),
        (1, "response.in_progress"),
        (2, "response.output_item.added"),
        (3, "response.content_part.added"),
        (length + 4, "response.output_text.done"),
        (length + 5, "response.content_part.done"),
        (length + 6, "response.output_item.done"),
        (length + 7, "response.completed"),
    ]
    deltas = [event for event in events if event["type"] == "response.output_text.delta"]
    assert [delta["delta"] for delta in deltas] == [
        "Lyon ",
        "is ",
        "in ",
        "France.\n",
        "It ",
        "has ",
        "two ",
        "rivers.",
    ]
    # A delta is numbered by where its text ends: 3 + that offset.
    ends = [len("".join(d["delta"] for d in deltas[: n + 1])) for n in range(len(deltas))]
    assert [delta["sequence_number"] for delta in deltas] == [3 + end for end in ends]
    numbers = [event["sequence_number"] for event in events]
    assert numbers == sorted(set(numbers))
    assert events[-1]["response"]["status"] == "completed"
    assert events[-4]["text"] == TEXT


@pytest.mark.parametrize("chunks", [[TEXT], list(TEXT), ["Lyon is in France.\n", "It has two rivers."]])
def test_however_the_text_arrives_the_events_are_the_same(chunks: list[str]) -> None:
    answer = _answer()
    assert _stream(answer, chunks) == _stream(answer, ["Lyon is in Fr", "ance.\nIt has two", " rivers."])


@pytest.mark.parametrize("after", [0, 1, 3, 8, 9, 10, 11, len(TEXT) + 3, len(TEXT) + 5])
def test_resuming_after_any_number_gives_the_rest_with_no_gap_or_repeat(after: int) -> None:
    answer = _answer()
    whole = _stream(answer, [TEXT])
    # Between two deltas' numbers, it resumes after the delta before: that number was never given.
    given = max(e["sequence_number"] for e in whole if e["sequence_number"] <= after)
    rest = _stream(answer, [], starting_after=after)
    assert rest == [event for event in whole if event["sequence_number"] > given]


def test_calls_follow_the_message_four_events_each_and_come_whole() -> None:
    events = _stream(_answer(tool_calls=CALLS), [TEXT])
    first = next(n for n, event in enumerate(events) if event.get("item", {}).get("type") == "function_call")
    calls = events[first:-1]
    assert [event["sequence_number"] for event in calls] == list(range(len(TEXT) + 7, len(TEXT) + 15))
    assert [event["type"] for event in calls[:4]] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    assert [event["output_index"] for event in calls] == [1] * 4 + [2] * 4
    assert (calls[1]["delta"], calls[2]["arguments"]) == ('{"city": "Lyon"}', '{"city": "Lyon"}')
    assert calls[7]["item"]["name"] == "get_time"
    assert (events[-1]["type"], events[-1]["sequence_number"]) == ("response.completed", len(TEXT) + 15)


def test_calls_without_text_have_no_message_and_start_at_two() -> None:
    events = _stream(_answer("", tool_calls=CALLS), [])
    assert [event["sequence_number"] for event in events] == list(range(11))
    assert events[2]["item"]["type"] == "function_call"
    assert events[2]["output_index"] == 0
    assert not any(event["type"].startswith("response.output_text") for event in events)


def test_a_failed_answer_ends_its_text_and_fails_without_its_calls() -> None:
    failed = _answer("Lyon is", MessageStatus.FAILED, tool_calls=CALLS, error="the upstream went away")
    events = _stream(failed, ["Lyon is"])
    assert not any(event.get("item", {}).get("type") == "function_call" for event in events)
    assert events[-2]["item"]["status"] == "incomplete"
    assert events[-1]["type"] in ("response.failed", "response.incomplete")
    assert events[-1]["sequence_number"] == len("Lyon is") + 7


def test_logprobs_go_with_the_next_delta_sent() -> None:
    started = _answer("", MessageStatus.IN_PROGRESS)
    events = ResponseEvents(started, "fake-model", -1)
    list(events.start())
    held = _parsed(events.text("Lyo", 3, [{"token": "Lyo", "logprob": -0.1}]))
    sent = _parsed(events.text("n is", 7, [{"token": "n", "logprob": -0.2}]))
    deltas = [event for event in held + sent if event["type"] == "response.output_text.delta"]
    assert [(delta["delta"], delta["logprobs"]) for delta in deltas] == [
        ("Lyon ", [{"token": "Lyo", "logprob": -0.1}, {"token": "n", "logprob": -0.2}])
    ]


def test_resuming_an_answer_still_written_goes_on_from_the_stored_text() -> None:
    """The client saw up to "Lyon is in " (event 14); the gateway it comes back through has stored more."""
    answer = _answer()
    so_far = "Lyon is in France.\nIt"
    stored = answer.model_copy(update={"content": so_far, "status": MessageStatus.IN_PROGRESS})
    events = ResponseEvents(stored, "fake-model", 14)
    assert events.text_offset() == len("Lyon is in ")
    rendered = [*events.start(), *events.text(so_far[events.text_offset() :], len(so_far))]
    rendered += events.text(TEXT[len(so_far) :], len(TEXT))
    rendered += events.end(answer)
    assert _parsed(iter(rendered)) == [event for event in _stream(answer, [TEXT]) if event["sequence_number"] > 14]
