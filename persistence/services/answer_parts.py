"""Which model wrote which part of an answer (``messages.answer_parts``), as its appends and its end record it.

An answer's first part is its own model's, from offset 0, and goes unrecorded while it is the only one: the
column stays NULL for an answer one model wrote. Parts are JSON objects of ``shared.resources.AnswerPart``.
"""

from typing import Any

from shared import Conflict
from shared.resources import MAX_ANSWER_PARTS

Parts = list[dict[str, Any]]


def after_append(parts: Parts | None, model: str | None, writer: str, offset: int) -> Parts | None:
    """The parts once ``writer`` writes from ``offset`` on (the answer's length): ``parts`` themselves when
    ``writer`` wrote the last part already, None when the answer's own ``model`` is its only writer again."""
    own = [{"model": model, "offset": 0, "usage": None}] if model is not None else []
    current = list(parts or own)
    if current and current[-1]["model"] == writer:
        return parts
    # A part that ends where it began wrote nothing: the new one takes its place.
    while current and current[-1]["offset"] >= offset:
        current.pop()
    if not current or current[-1]["model"] != writer:
        if len(current) >= MAX_ANSWER_PARTS:  # refused with its text: its transaction is rolled back
            raise Conflict(f"an answer has at most {MAX_ANSWER_PARTS} parts", parts=len(current))
        current.append({"model": writer, "offset": offset, "usage": None})
    return None if current == own else current
