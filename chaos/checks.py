"""The chaos run's checks: every chat against what is stored and what the upstreams sent, and the targets of
docs/reliability.md."""

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chaos.answers import answer_for, key_of
from chaos.clients import Chat
from chaos.joins import Request, joins


@dataclass
class Stored:
    status: str
    content: str


@dataclass
class Tally:
    """The figures the chats add up to."""

    answers: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)  # the evidence of a few problems, for the JSON
    shown_wrong: int = 0
    told_then_generated: int = 0
    events_again: int = 0
    acknowledged_lost: int = 0  # chats whose client was given the answer's id, and nothing is stored
    sent: int = 0
    needed: int = 0

    def problem(self, text: str, chat: Chat | None = None, answer: Stored | None = None, requests: Any = ()) -> None:
        self.problems.append(text)
        if chat is not None and answer is not None and len(self.details) < 20:
            self.details.append(_evidence(text, chat, answer, requests))


def _evidence(text: str, chat: Chat, answer: Stored, requests: list[Request]) -> dict[str, Any]:
    """A problem's chat as the client had it, and the requests its upstreams saw, to find where a join broke."""
    differ = next((i for i, (a, b) in enumerate(zip(chat.seen, answer.content, strict=False)) if a != b), None)
    return {
        "problem": text,
        "client": {"kind": chat.kind, "outcome": chat.outcome, "seen": chat.seen, "notes": chat.notes[-10:]},
        "stored": {"status": answer.status, "content": answer.content},
        "first difference": differ,
        "requests": [
            {"at": r.at, "partial": len(r.partial), "anchor": r.anchor, "sent": r.sent, "finished": r.finished}
            for r in sorted(requests, key=lambda r: r.at)
        ],
    }


def _judge_answer(tally: Tally, chat: Chat, answer: Stored, requests: list[Request], *, sampled: bool) -> None:
    """Exact, wrong, failed or stuck. Wrong: it does not join (it is not what the upstream sent, pieced
    together), or, from an upstream that answers the same every time, it is not that answer."""
    key = key_of(chat.question)
    if answer.status == "complete":
        expected = None if sampled else answer_for(chat.question)
        if not joins(answer.content, requests, complete=True):
            tally.answers["wrong"] += 1
            tally.problem(
                f"{key}: stored {answer.content[:60]!r}... ({len(answer.content)}) does not join",
                chat,
                answer,
                requests,
            )
        elif expected is not None and answer.content != expected:
            tally.answers["wrong"] += 1
            tally.problem(f"{key}: stored {answer.content[:60]!r}..., expected {expected[:60]!r}...")
        else:
            tally.answers["exact"] += 1
            tally.sent += sum(len(request.sent) for request in requests)
            tally.needed += len(answer.content)
    elif not joins(answer.content, requests, complete=False):
        tally.answers["wrong"] += 1  # failed or not yet ended, with text the upstream never sent
        tally.problem(
            f"{key}: {answer.status} with {answer.content[:60]!r}... ({len(answer.content)}): no join",
            chat,
            answer,
            requests,
        )
    elif answer.status == "failed":
        tally.answers["failed"] += 1
    else:
        tally.answers["stuck"] += 1
        tally.problem(f"{key}: stuck {answer.status}")


def _judge_client(tally: Tally, chat: Chat, answer: Stored, requests: list[Request]) -> None:
    """What the client was shown and told against what is stored and what the upstream was asked for."""
    key = key_of(chat.question)
    content = answer.content
    shown_ok = chat.seen == content if chat.outcome == "complete" else content.startswith(chat.seen)
    if not shown_ok:
        tally.shown_wrong += 1
        shown = f"{key} ({chat.kind}): shown {chat.seen[-40:]!r} ({len(chat.seen)}), stored {len(content)}"
        tally.problem(shown, chat, answer, requests)
    if repeated := [note for note in chat.notes if note.startswith("event ") and " again" in note]:
        tally.events_again += 1  # a resumed response's event given twice
        tally.problem(f"{key} ({chat.kind}): {repeated[0]}")
    if chat.told_failed_at is not None:
        later = [request for request in requests if request.at > chat.told_failed_at]
        if later or answer.status == "complete":
            tally.told_then_generated += 1
            tally.problem(f"{key} ({chat.kind}): told it failed ({chat.notes[-1:]}), then generated")


def tally_chats(
    chats: list[Chat], stored: dict[str, Stored], requests: dict[str, list[Request]], *, sampled: bool
) -> Tally:
    tally = Tally()
    for chat in chats:
        key = key_of(chat.question)
        answer = stored.get(key)
        if answer is None:
            tally.answers["not stored"] += 1
            if chat.message_id is not None:
                tally.acknowledged_lost += 1
                tally.problem(f"{key} ({chat.kind}): its client was given id {chat.message_id}, but nothing is stored")
            if chat.outcome == "complete":
                tally.problem(f"{key}: shown complete, but nothing is stored")
                tally.shown_wrong += 1
            continue
        _judge_answer(tally, chat, answer, requests.get(key, []), sampled=sampled)
        _judge_client(tally, chat, answer, requests.get(key, []))
    return tally


def percentile(values: list[float], share: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[int(share * (len(ordered) - 1))], 2) if ordered else None


def report(chats: list[Chat], tally: Tally, pickups: list[float], never: int) -> dict[str, Any]:
    return {
        "chats": len(chats),
        "kinds": dict(Counter(chat.kind for chat in chats)),
        "client outcomes": dict(Counter(chat.outcome for chat in chats)),
        "answers": dict(tally.answers),
        "clients shown text that is not the stored answer": tally.shown_wrong,
        "chats generated after their client was told they failed": tally.told_then_generated,
        "responses resumed with an event given twice": tally.events_again,
        "characters generated / needed": round(tally.sent / tally.needed, 4) if tally.needed else None,
        "orphans picked up": len(pickups),
        "orphans never picked up": never,
        "pickup p50 s": round(statistics.median(pickups), 2) if pickups else None,
        "pickup p95 s": percentile(pickups, 0.95),
        "problems": tally.problems[:40],
        "evidence": tally.details,
    }


def through_outages(
    chats: list[Chat], stored: dict[str, Stored], requests: dict[str, list[Request]], outages: list[tuple[float, float]]
) -> dict[str, int]:
    """The answers in progress or started while an upstream was down (from the client's first request to the
    later of its last word and the upstreams' last request for it), and the failed ones among them: stored as
    failed, or their client told so. With a fallback, none should fail: the other upstream takes them."""
    through = failed = 0
    for chat in chats:
        key = key_of(chat.question)
        ended = max([chat.ended, *(request.at for request in requests.get(key, []))])
        if not any(chat.began < end and ended > start for start, end in outages):
            continue
        through += 1
        answer = stored.get(key)
        failed += chat.outcome == "failed" or (answer is not None and answer.status == "failed")
    return {"answers through an outage": through, "failed answers through an outage": failed}


# The faults' average spacing the targets are set for (`make chaos`): at 5 s, at most 5 % more is generated than
# the answers need, the waste being the faults' (text a killed or paused gateway had not made durable).
TARGET_FAULT_GAP = 5.0
TARGET_OVERHEAD = 0.05


def overhead_allowed(fault_gap: float) -> float:
    """What may be generated beyond what is needed, for faults ``fault_gap`` s apart: the target's share at
    ``make chaos``'s spacing, more where faults come more often (the short run in ``make test``), never less."""
    return TARGET_OVERHEAD * max(1.0, TARGET_FAULT_GAP / fault_gap)


def missed_targets(report: dict[str, Any], *, timing: bool = True, fault_gap: float = TARGET_FAULT_GAP) -> list[str]:
    """The targets of docs/reliability.md the run missed; ``timing``: the time targets' too, which only a
    machine doing nothing else measures (the short run in ``make test`` shares it with other tests);
    ``fault_gap``: how far apart the run's faults came, which the waste of generated text grows with."""
    missed = []
    if report["answers"].get("wrong", 0):
        missed.append("wrong answers")
    if report["answers"].get("stuck", 0):
        missed.append("stuck answers")
    for figure in (
        "clients shown text that is not the stored answer",
        "chats generated after their client was told they failed",
        "responses resumed with an event given twice",
        "orphans never picked up",
        "acknowledged writes lost",
        "answers not resumed after a failover",
        "failed answers through an outage",
    ):
        if report.get(figure):
            missed.append(figure)
    limit = 1 + overhead_allowed(fault_gap)
    if (ratio := report["characters generated / needed"]) is not None and ratio > limit:
        missed.append(f"characters generated / needed above {limit:.3g}")
    if timing and (p95 := report["pickup p95 s"]) is not None and p95 > 5:
        missed.append("orphan pickup p95 above 5 s")
    if timing and (p95 := report["failover resume p95 s"]) is not None and p95 > 10:
        missed.append("answers resumed more than 10 s after a promotion (p95)")
    return missed
