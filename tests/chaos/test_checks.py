"""The chaos run's tally (chaos/checks.py), fed crafted chats, stored answers and upstream requests."""

from typing import Any

import pytest

from chaos.answers import answer_for
from chaos.checks import Stored, missed_targets, overhead_allowed, report, tally_chats, through_outages
from chaos.clients import Chat
from chaos.joins import Request


def _chat(key: str, seen: str, outcome: str = "complete", message_id: str | None = "id") -> Chat:
    return Chat(f"chat-{key}: tell me something", "sse", message_id=message_id, seen=seen, outcome=outcome)


def _sent(text: str, partial: str = "", at: float = 1.0) -> Request:
    return Request(at=at, partial=partial, anchor="", sent=text, finished=True)


def test_a_sampled_answer_is_judged_by_its_join_and_every_client_by_the_stored_answer() -> None:
    chats = [
        _chat("0-0", "one two three"),  # exact, shown whole
        _chat("0-1", "one two", outcome="unknown"),  # exact, shown a start
        _chat("0-2", "one two six"),  # exact, shown other words
        _chat("0-3", "one five"),  # stored text the upstream never sent
        _chat("0-4", "", outcome="unknown"),  # given its id, nothing stored
        _chat("0-5", "", outcome="unknown", message_id=None),  # lost before its turn was stored
    ]
    stored = {
        "0-0": Stored("complete", "one two three"),
        "0-1": Stored("complete", "one two four"),
        "0-2": Stored("complete", "one two seven"),
        "0-3": Stored("complete", "one five"),
    }
    requests = {
        "0-0": [_sent("one two three")],
        "0-1": [_sent("one two thr", at=1), _sent("four", partial="one two ", at=2)],
        "0-2": [_sent("one two seven")],
        "0-3": [_sent("one two three")],
    }
    tally = tally_chats(chats, stored, requests, sampled=True)
    assert dict(tally.answers) == {"exact": 3, "wrong": 1, "not stored": 2}
    assert tally.shown_wrong == 1
    assert tally.acknowledged_lost == 1
    # What was sent for the answers that joined, over their lengths: 0-1 paid for "thr" twice over.
    assert (tally.sent, tally.needed) == (13 + 11 + 4 + 13, 13 + 12 + 13)
    figures = report(chats, tally, pickups=[], never=0) | {
        "acknowledged writes lost": tally.acknowledged_lost,
        "answers not resumed after a failover": 0,
        "failover resume p95 s": None,
    }
    assert missed_targets(figures) == [
        "wrong answers",
        "clients shown text that is not the stored answer",
        "acknowledged writes lost",
        "characters generated / needed above 1.05",
    ]
    # Faults twice as close (the minute in `make test`): twice the waste is the same target.
    assert "characters generated / needed above 1.05" not in missed_targets(figures, fault_gap=2.5)
    shown_other, not_joined = tally.details[:2]
    assert shown_other["first difference"] == len("one two s")  # 0-2: "six" where "seven" is stored
    assert not_joined["first difference"] is None  # 0-3: its client holds the stored text, which was never sent
    assert not_joined["requests"] == [
        {"at": 1.0, "partial": 0, "anchor": "", "sent": "one two three", "finished": True}
    ]


def test_an_upstream_that_answers_the_same_also_checks_the_text_known_in_advance() -> None:
    question_key = "1-0"
    expected = answer_for(f"chat-{question_key}: tell me something")
    chat = _chat(question_key, expected)
    joined_but_other = {question_key: [_sent("something else")]}
    other = tally_chats([chat], {question_key: Stored("complete", "something else")}, joined_but_other, sampled=False)
    assert dict(other.answers) == {"wrong": 1}
    right = tally_chats(
        [chat], {question_key: Stored("complete", expected)}, {question_key: [_sent(expected)]}, sampled=False
    )
    assert dict(right.answers) == {"exact": 1}
    assert right.sent == right.needed == len(expected)


def test_the_waste_allowed_grows_with_the_faults_density_never_below_the_target() -> None:
    assert overhead_allowed(5) == 0.05  # make chaos's spacing: the target itself
    assert overhead_allowed(3) == pytest.approx(0.05 * 5 / 3)
    assert overhead_allowed(10) == 0.05  # rarer faults are not held to less


def test_an_answer_in_progress_or_started_during_an_outage_is_counted_and_must_not_fail() -> None:
    before, across, during, moved_on, after = (_chat(f"1-{n}", "one") for n in range(5))
    for chat, began, ended in ((before, 1, 9), (across, 5, 12), (during, 11, 14), (moved_on, 8, 9), (after, 21, 25)):
        chat.began, chat.ended = began, ended
    during.outcome = "failed"  # told it failed
    stored = {"1-1": Stored("failed", "one"), "1-2": Stored("failed", "one"), "1-3": Stored("complete", "one")}
    requests = {"1-3": [_sent("one", at=8), _sent("", partial="one", at=10.5)]}  # its client left; it went on
    figures = through_outages([before, across, during, moved_on, after], stored, requests, [(10.0, 20.0)])
    assert figures == {"answers through an outage": 3, "failed answers through an outage": 2}
    # Only the figures a target reads without a default: a run's every other is 0.
    base: dict[str, Any] = {
        "answers": {},
        "characters generated / needed": None,
        "pickup p95 s": None,
        "failover resume p95 s": None,
    }
    assert missed_targets(base | figures) == ["failed answers through an outage"]
    assert missed_targets(base | {**figures, "failed answers through an outage": 0}) == []
