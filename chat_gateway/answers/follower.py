"""Following an answer wherever it is generated: from this gateway's generation while it runs here, else
through persistence, polled for changes only. Reattaching clients, other gateways' answers and the JSON
replies that wait for an answer's end all read it this way."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping

from chat_gateway.answers.events import StreamEvent, final_event
from chat_gateway.answers.generation import Generation
from chat_gateway.answers.parts import model_at, next_boundary
from chat_gateway.clients.persistence import PersistenceClient
from chat_gateway.config import Settings
from shared import DomainError, ErrorCode, MessageStatus, OffsetMismatch, ServiceUnavailable
from shared.contract import MessageDetail, MessageText

TERMINAL = frozenset({MessageStatus.COMPLETE, MessageStatus.FAILED})


def _diverged_at(stored: MessageText, unconfirmed: str) -> int | None:
    """The offset where the stored text departs from the text a client was shown unconfirmed (None: it does not,
    though either may be the shorter)."""
    text = stored.text
    same = next((i for i, (a, b) in enumerate(zip(text, unconfirmed, strict=False)) if a != b), None)
    return None if same is None else stored.offset + same


def _deltas(stored: MessageText, offset: int) -> Iterator[StreamEvent]:
    """The stored text from ``offset`` on, cut where a part begins: the first delta of a part another model wrote
    names it, as a generation's own listeners are told (``Generation.events``), from the parts stored with it."""
    parts = stored.answer_parts or []
    while offset < stored.length:
        end = next_boundary(parts, offset, stored.length)
        text = stored.text[offset - stored.offset : end - stored.offset]
        yield StreamEvent("delta", end, text=text, model=model_at(parts, offset, stored.model))
        offset = end


def _ended(offset: int, stored: MessageText) -> StreamEvent:
    """How a stream that reached ``offset`` ends, the answer stored ended."""
    return final_event(
        offset,
        stored.length,
        stored.status,
        error=stored.error,
        finish_reason=stored.finish_reason,
        usage=stored.usage,
        tool_calls=stored.tool_calls,
    )


class Follower:
    def __init__(
        self, settings: Settings, persistence: PersistenceClient, live: Mapping[uuid.UUID, Generation]
    ) -> None:
        self.settings = settings
        self.persistence = persistence
        self._live = live  # the answers this gateway generates, by id

    async def follow(self, message_id: uuid.UUID, offset: int) -> AsyncIterator[StreamEvent]:
        """The answer's text from ``offset`` on, live, until it ends: here or in another gateway."""
        version = None  # of the message as last read from persistence: unchanged, it is not sent again
        # Where persistence is read from: behind ``offset`` while the client has seen text that the gateway
        # which streamed it to it has not saved yet (it saves once a second).
        read_from = offset
        # Text this client was sent by this gateway's generation that persistence did not hold when the answer
        # left it (lease lost): the new owner may have continued differently, which is checked before going on.
        unconfirmed = ""
        while True:
            if (generation := self._live.get(message_id)) is not None:
                async for event in generation.events(offset):
                    if event.kind == "handoff":
                        break
                    yield event
                    offset = event.offset
                else:
                    return
                if offset > generation.buffer.saved:
                    unconfirmed = generation.text[generation.buffer.saved : offset]
                    read_from, version = generation.buffer.saved, None
            try:
                stored = await self.persistence.messages.poll_text(message_id, read_from, version)
            except OffsetMismatch as exc:  # the text the client saw is not saved yet: wait for it
                read_from, version = exc.length, None
                continue
            except DomainError as exc:
                # Ends with an error, not broken off: the answer may go on (no status), a client can reattach.
                yield StreamEvent("error", offset, error=f"lost track of the answer: {exc.detail}")
                return
            if stored is not None and unconfirmed:
                if (at := _diverged_at(stored, unconfirmed)) is not None:
                    error = f"the answer was taken over and continued differently from offset {at}: reattach from {at}"
                    yield StreamEvent("error", offset, error=error)
                    return
                if len(stored.text) < len(unconfirmed) and stored.status not in TERMINAL:
                    version = stored.version  # not all there yet: read from the same place again
                    await asyncio.sleep(self.settings.reattach_poll_seconds)
                    continue
                unconfirmed = ""
            if stored is not None:  # None: unchanged since the last poll
                version, read_from = stored.version, stored.length
                if stored.length > offset:
                    for delta in _deltas(stored, offset):
                        yield delta
                    offset = stored.length
                if stored.status in TERMINAL:
                    yield _ended(offset, stored)
                    return
            await asyncio.sleep(self.settings.reattach_poll_seconds)

    async def outcome(self, message_id: uuid.UUID) -> MessageDetail:
        """Wait for the answer to end and return it as stored.

        Through persistence outages too, for up to TURN_SETTLE_SECONDS at a time: a client answered at once
        with a 503 would take its chat for failed while it goes on. Past that, a 503 ``outcome_unknown`` says
        that the answer may still end well, and where to read it.
        """
        unknown_since = None
        while True:
            try:
                async for event in self.follow(message_id, 0):
                    if event.kind == "done" or (event.kind == "error" and event.status is not None):
                        return await self.persistence.messages.get(message_id)
                # Lost track of it (persistence unreachable): follow it again.
            except ServiceUnavailable:
                pass
            unknown_since = unknown_since or time.monotonic()
            if time.monotonic() - unknown_since > self.settings.turn_settle_seconds:
                raise ServiceUnavailable(
                    "the answer's outcome is not known yet (the persistence service is unreachable); it may still "
                    f"complete: read it with GET /chat/messages/{message_id}/stream",
                    code=ErrorCode.OUTCOME_UNKNOWN,
                    message_id=str(message_id),
                )
            await asyncio.sleep(min(1.0, self.settings.reattach_poll_seconds * 4))
