"""Which model writes which part of an answer this gateway generates: an answer whose upstream failed mid-answer goes
on on its route's next model from its saved text (chat_gateway/upstreams/route.py ``Route.move_on``), and each
model's part is recorded from the offset where it began, with the tokens it spent (the ledger counts each part's
under its own model: persistence/services/usage.py ``settle_parts``).

A part is begun once per upstream attempt, when its stream opens (``begin``), never per chunk; its usage is what the
answer's usage grew by while it was the last part.

A model is named as the upstreams file names it (the model asked for, an alias resolved, or the fallback that took
over), never as its upstream reports itself ("gpt-4o-mini-2024-07-18" for "gpt-4o-mini"): the stored answer, its
parts, the ledger and every stream say the same name, the one users budget and filter by.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shared.contract import MessageDetail
from shared.resources import AnswerPart

# A part that wrote nothing in this run spent nothing: the ledger is told so, not left to estimate it.
NOTHING = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@dataclass
class Part:
    model: str  # the model asked of the upstream (the route's), which the ledger counts it under
    offset: int  # where it begins in the answer's text
    usage_from: dict[str, int] = field(default_factory=dict)  # the answer's usage when it began
    usage: dict[str, int] | None = None  # its own, once another part followed it


class Written(Protocol):
    """A part as this run holds it (``Part``) or as persistence stored it (``AnswerPart``)."""

    @property
    def model(self) -> str: ...

    @property
    def offset(self) -> int: ...


def model_at(parts: Sequence[Written], offset: int, announced: str | None) -> str | None:
    """The model a stream names on its text from ``offset``: that of the part beginning there, when the text
    before it (or, at 0, the model announced) was another's."""
    before = announced
    for part in parts:
        if part.offset == offset and part.model != before:
            return part.model
        before = part.model
    return None


def next_boundary(parts: Sequence[Written], offset: int, end: int) -> int:
    """Where the first part after ``offset`` begins, if before ``end``; else ``end``."""
    return next((part.offset for part in parts[1:] if offset < part.offset < end), end)


def _grown(now: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: value - before.get(key, 0) for key, value in now.items() if value != before.get(key, 0)}


class AnswerParts:
    """The parts of one answer: those stored before this run (a claimed answer's), then this run's."""

    def __init__(self, answer: MessageDetail, text_length: int) -> None:
        self.run_start = text_length  # this run writes from here on (further, with text taken from the answer log)
        self.announced = answer.model  # the model its clients were told when it began
        stored = answer.answer_parts or (
            [AnswerPart(model=answer.model, offset=0)] if answer.model and text_length else []
        )
        self.parts = [Part(part.model, part.offset, usage=dict(NOTHING)) for part in stored]
        if self.parts:  # the last goes on if this run's model is its own
            self.parts[-1].usage = None

    @property
    def several(self) -> bool:
        return len(self.parts) > 1

    @property
    def renamed(self) -> bool:
        """Whether a stream names the model of some of its text: another took over mid-answer, or before the first
        word a fallback model wrote it all."""
        return self.several or (bool(self.parts) and self.parts[0].model != self.announced)

    @property
    def model(self) -> str | None:
        """The answer's model: its first part's."""
        return self.parts[0].model if self.parts else None

    def begin(self, model: str, offset: int, usage: dict[str, int]) -> bool:
        """An attempt's stream opened on ``model`` at ``offset``: whether a new part begins there after another
        model's text (a boundary the writer records)."""
        if self.parts and self.parts[-1].model == model:
            return False
        since = usage
        if self.parts:
            last = self.parts[-1]
            if last.usage is None:
                last.usage = _grown(usage, last.usage_from)
            if last.offset >= offset and last.offset >= self.run_start:
                # It wrote nothing: this one takes its place, and what its attempts spent.
                since = self.parts.pop().usage_from
        if self.parts and self.parts[-1].model == model:  # back to the model before the one that wrote nothing
            self.parts[-1].usage = None
            return False
        self.parts.append(Part(model, offset, usage_from=dict(since)))
        return offset > 0

    def model_at(self, offset: int) -> str | None:
        """The model of the part that begins at ``offset`` after another's, or of a first part another model than
        the one announced wrote (None: none begins there)."""
        return model_at(self.parts, offset, self.announced)

    def next_boundary(self, offset: int, end: int) -> int:
        """Where the first part after ``offset`` begins, if before ``end``; else ``end``."""
        return next_boundary(self.parts, offset, end)

    def stored(self, usage: dict[str, int], length: int) -> list[AnswerPart]:
        """The parts as the answer's end stores them, the last one's usage what the answer's grew by since it
        began; a part without figures that wrote something in this run is left to persistence to estimate."""
        ends = [part.offset for part in self.parts[1:]] + [length]
        result = []
        for part, end in zip(self.parts, ends, strict=True):
            spent = part.usage if part.usage is not None else _grown(usage, part.usage_from)
            if not spent and end <= max(part.offset, self.run_start):
                spent = dict(NOTHING)
            result.append(AnswerPart(model=part.model, offset=part.offset, usage=spent or None))
        return result
