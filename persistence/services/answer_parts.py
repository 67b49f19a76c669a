"""Which model wrote which part of an answer (``messages.answer_parts``), as its appends and its end record it.

An answer's first part is its own model's, from offset 0, and goes unrecorded while it is the only one: the
column stays NULL for an answer one model wrote. Parts are JSON objects of ``shared.resources.AnswerPart``.
"""

from typing import Any

from shared import Conflict
from shared.resources import MAX_ANSWER_PARTS

Parts = list[dict[str, Any]]


def after_append(parts: Parts | None, model: str | None, writer: str, offset: int) -> tuple[Parts | None, str | None]:
    """The parts and the answer's model once ``writer`` writes from ``offset`` on (the answer's length): ``parts``
    themselves when ``writer`` wrote the last part already, None when one model is its only writer again: its own,
    or ``writer``, which then is the answer's model (the one asked for wrote nothing: a fallback took it before the
    first word)."""
    own = [{"model": model, "offset": 0, "usage": None}] if model is not None else []
    current = list(parts or own)
    if current and current[-1]["model"] == writer:
        return parts, model
    # A part that ends where it began wrote nothing: the new one takes its place.
    while current and current[-1]["offset"] >= offset:
        current.pop()
    if not current or current[-1]["model"] != writer:
        if len(current) >= MAX_ANSWER_PARTS:  # refused with its text: its transaction is rolled back
            raise Conflict(f"an answer has at most {MAX_ANSWER_PARTS} parts", parts=len(current))
        current.append({"model": writer, "offset": offset, "usage": None})
    if len(current) == 1 and current[0]["offset"] == 0:
        return None, writer
    return (None if current == own else current), model
