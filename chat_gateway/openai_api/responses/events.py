"""A response's streamed events, rendered from its answer as stored (its text as it grows), so every gateway
renders them alike and a client resumes them from any event, through any gateway.

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
from collections.abc import Iterator
from typing import Any

from chat_gateway.openai_api.responses.items import (
    has_message,
    item_status,
    message_item,
    message_item_id,
    output_text,
    stored_call_item,
)
from chat_gateway.openai_api.responses.response_object import response_object
from shared import JSONObject, MessageStatus
from shared.contract import MessageDetail
from shared.resources import ToolCall

# The event numbers before the text's deltas (created, in_progress, the message's item and part).
BEFORE_TEXT = 3
# Where a text's deltas are cut: after each whitespace character, and at its end. Known as soon as that
# character is: nothing waits for what comes after it.
CUT_AFTER = re.compile(r"\s")


def sse(event: JSONObject) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


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
        self._model: str | None = None  # the model the next delta sent names (live only, as logprobs)
        kind = "response.output_text.delta"
        self._delta_head = f'event: {kind}\ndata: {{"type": "{kind}", "sequence_number": '
        item = f'"item_id": "{message_item_id(answer.id.hex)}", "output_index": 0, "content_index": 0, "logprobs": []'
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
            item = message_item(self.answer.id.hex, "assistant", "in_progress", [])
            yield from self._event(2, "response.output_item.added", output_index=0, item=item)
            part = output_text("")
            yield from self._event(
                3, "response.content_part.added", item_id=item["id"], output_index=0, content_index=0, part=part
            )

    def text(
        self, delta: str, offset: int, logprobs: list[JSONObject] | None = None, model: str | None = None
    ) -> Iterator[str]:
        """Text that ends at ``offset`` in the answer: sent word by word, each with the whitespace after it
        (``CUT_AFTER``), so that however it arrived (an upstream's chunks, a replay's one read) it is cut alike.
        Its ``logprobs`` (live only: they are not stored) go with the next delta sent, and so does ``model``, the
        model that wrote it when another wrote the text before it (the first delta with its text names it).
        """
        yield from self._open_message()
        self._logprobs += logprobs or []
        self._model = model or self._model
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
            if self._logprobs or self._model is not None:
                item = {"item_id": message_item_id(self.answer.id.hex), "output_index": 0, "content_index": 0}
                kind = "response.output_text.delta"
                named = {} if self._model is None else {"model": self._model}
                yield sse(
                    {"type": kind, "sequence_number": sequence, **item, "logprobs": self._logprobs, "delta": text}
                    | named
                )
                self._logprobs, self._model = [], None
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
        sequence, index = 2, 0
        if has_message(text, calls):
            yield from self._end_message(stored)
            sequence, index = BEFORE_TEXT + len(text) + 4, 1
        for position, call in enumerate(calls):
            yield from self._call(stored, sequence + 4 * position, index + position, position, call)
        final = response_object(stored, stored.model or self.model)  # its first part's (a fallback's, maybe)
        kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(final["status"])
        yield from self._event(sequence + 4 * len(calls), kind or "response.failed", response=final)

    def _end_message(self, stored: MessageDetail) -> Iterator[str]:
        yield from self._open_message()
        text = stored.content
        end = BEFORE_TEXT + len(text)
        at = {"item_id": message_item_id(stored.id.hex), "output_index": 0, "content_index": 0}
        yield from self._event(end + 1, "response.output_text.done", **at, text=text, logprobs=[])
        yield from self._event(end + 2, "response.content_part.done", **at, part=output_text(text))
        item = message_item(stored.id.hex, "assistant", item_status(stored.status), [output_text(text)])
        yield from self._event(end + 3, "response.output_item.done", output_index=0, item=item)

    def _call(
        self, stored: MessageDetail, sequence: int, output_index: int, position: int, call: ToolCall
    ) -> Iterator[str]:
        """A call's four events, from ``sequence``: it is given whole, its arguments in one delta."""
        added = stored_call_item(stored.id.hex, position, call, status="in_progress")
        at = {"item_id": added["id"], "output_index": output_index}
        yield from self._event(sequence, "response.output_item.added", output_index=output_index, item=added)
        arguments = call.function.arguments
        yield from self._event(sequence + 1, "response.function_call_arguments.delta", **at, delta=arguments)
        yield from self._event(sequence + 2, "response.function_call_arguments.done", **at, arguments=arguments)
        done = stored_call_item(stored.id.hex, position, call)
        yield from self._event(sequence + 3, "response.output_item.done", output_index=output_index, item=done)
