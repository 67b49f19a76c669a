"""What a generation tells its listeners: how it ended (``Outcome``, its state machine) and the events they
receive (``StreamEvent``), with the one rule for how a stream from an offset ends (``final_event``), whether the
answer was generated here or followed through persistence."""

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shared import JSONObject, MessageStatus, storable_text
from shared.resources import ToolCall


class Outcome(enum.StrEnum):
    """How a generation ended, as this gateway knows it: ``GENERATING`` until ``Generation._end`` sets one of the
    others, once.

    | Outcome | Stored as | Its listeners get |
    | --- | --- | --- |
    | ``COMPLETE`` | complete, with all its text | ``done`` |
    | ``FAILED`` | failed (upstream error, cancelled, a write refused), with the text saved | ``error``, failed |
    | ``RELEASED`` | in progress, its lease released (shutdown): another gateway continues it at once | ``handoff`` |
    | ``NOT_OURS`` | whatever another owner makes of it (lease lost); nothing (deleted) | ``handoff``; ``error`` |
    | ``UNSAVED`` | in progress, as last saved (persistence unreachable): crash recovery continues it | ``handoff`` |

    After a ``handoff`` a listener follows the answer through persistence, as any gateway would.
    """

    GENERATING = "generating"
    COMPLETE = "complete"
    FAILED = "failed"
    RELEASED = "released"
    NOT_OURS = "not_ours"
    UNSAVED = "unsaved"

    @property
    def status(self) -> MessageStatus | None:
        """The answer's stored status, when this gateway is the one that knows it."""
        return {
            Outcome.GENERATING: MessageStatus.IN_PROGRESS,
            Outcome.COMPLETE: MessageStatus.COMPLETE,
            Outcome.FAILED: MessageStatus.FAILED,
        }.get(self)


@dataclass(frozen=True)
class StreamEvent:
    """What a listener receives; ``offset`` is the length of the answer after this event.

    An answer's offsets count the characters of its text, then one per tool call: its calls follow all of its
    text, since they are stored whole with its end (chat_gateway/answers/tool_calls.py). A ``done`` event carries the
    calls after the listener's offset; the first of them is at ``offset - len(tool_calls) + 1``.
    """

    kind: Literal["delta", "done", "error", "handoff"]
    offset: int
    text: str = ""
    status: MessageStatus | None = None
    error: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    tool_calls: Sequence[ToolCall] = ()
    logprobs: list[JSONObject] | None = None
    model: str | None = None  # on a delta: the model that wrote it, when another wrote the text before it


def describe(exc: BaseException) -> str:
    """The error an answer ends with: storable, since an upstream's message with a NUL in it, refused by
    persistence, would end the answer without the text it had not saved yet."""
    message = str(exc) or exc.__class__.__name__
    return storable_text(f"{exc.__class__.__name__}: {message}"[:2000])


def final_event(
    offset: int,
    text_length: int,
    status: MessageStatus,
    *,
    error: str | None,
    finish_reason: str | None,
    usage: dict[str, Any] | None,
    tool_calls: Sequence[ToolCall] | None,
) -> StreamEvent:
    """How a stream from ``offset`` ends, for an answer that ended with ``status``, its text ``text_length``
    long, then its calls: the one rule, whether the answer was generated here or followed through persistence.

    An offset past the end (a client that saw text a dead gateway had not saved, or a forged Last-Event-ID) ends
    with an error saying so, never ``done``: what that client holds is not the stored answer.
    """
    calls = tool_calls or ()
    length = text_length + len(calls)
    if offset > length:
        return StreamEvent(
            "error", offset, status=status, error=f"the answer ended at {length}, before offset {offset}"
        )
    if status == MessageStatus.COMPLETE:
        totals = {k: v for k, v in (usage or {}).items() if isinstance(v, int)}
        unseen = calls[max(0, offset - text_length) :]
        return StreamEvent("done", length, status=status, finish_reason=finish_reason, usage=totals, tool_calls=unseen)
    return StreamEvent("error", offset, status=status, error=error)
