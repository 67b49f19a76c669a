"""Whether a stored answer joins: is it what the upstream actually sent, pieced together?

A model that samples writes new words on every request, so a stored answer cannot be compared with a text known
in advance. What can be checked is the chain of requests the upstream saw for a chat, each with the partial
answer it was asked to continue and the text it sent: the stored answer must be the first request's text up to
where the second one continued it, that one's up to the third's, and so on, ending with the whole text of a
request that finished. Whatever a gateway cut, repeated, lost or invented at a join breaks the chain.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True)
class Request:
    """One request for a chat as the upstream saw it."""

    at: float  # when it came (time.time(), the same clock for every upstream of the run)
    partial: str  # the answer so far it was asked to continue ("" for the first)
    anchor: str  # the words it was asked to repeat first (a restarting upstream's continuation), else ""
    sent: str  # what it sent, the anchor included: all of it, or up to where its connection broke
    finished: bool  # it sent its last word and the finish reason

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> "Request":
        return cls(record["at"], record["partial"], record["anchor"], record["sent"], record["finished"])

    @property
    def kept(self) -> str:
        """What a gateway keeps of what was sent: the anchor, repeated as asked, is cut once; a reply that broke
        off inside the anchor adds nothing."""
        if self.sent.startswith(self.anchor):
            return self.sent[len(self.anchor) :]
        return "" if self.anchor.startswith(self.sent) else self.sent


def joins(stored: str, requests: Iterable[Request], *, complete: bool) -> bool:
    """True when ``stored`` is pieced together from ``requests`` (any order; they are put in the order they came):
    a partial answer a request was given must itself join, from earlier requests. ``complete``: the answer ended,
    so its last piece is the whole of what a finished request sent."""
    ordered = sorted(requests, key=lambda request: request.at)

    @cache
    def reached(length: int, before: int) -> bool:
        """``stored[:length]`` is pieced together from the first ``before`` requests (it may have stopped anywhere)."""
        return length == 0 or any(
            _extends(ordered[i], stored[:length], whole=False) and reached(len(ordered[i].partial), i)
            for i in range(before)
        )

    if not complete:
        return reached(len(stored), len(ordered))
    return any(
        _extends(request, stored, whole=True) and reached(len(request.partial), index)
        for index, request in enumerate(ordered)
    )


def _extends(request: Request, text: str, *, whole: bool) -> bool:
    """``text`` is ``request``'s partial answer followed by what it sent (``whole``: all of it, having finished;
    else any start of it)."""
    if not text.startswith(request.partial):
        return False
    added = text[len(request.partial) :]
    if whole:
        return request.finished and added == request.kept
    return request.kept.startswith(added)
