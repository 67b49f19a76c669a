import uuid
from datetime import UTC, datetime, timedelta

import pytest

from chat_gateway.prompt import CONTINUE_INSTRUCTION, OverlapTrimmer, build_messages, load_history, with_partial
from chat_gateway.schemas import StoredMessage
from shared import MessageRole, MessageStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SESSION = uuid.uuid4()

pytestmark = pytest.mark.anyio


def _message(role: str, content: str, minute: int, context=None) -> StoredMessage:
    return StoredMessage(
        id=uuid.uuid4(),
        session_id=SESSION,
        role=MessageRole(role),
        content=content,
        context=context,
        status=MessageStatus.COMPLETE,
        created_at=T0 + timedelta(minutes=minute),
    )


def test_context_goes_in_a_system_message_before_the_newest_question() -> None:
    history = [
        _message("user", "first", 0, context={"doc": "old"}),
        _message("assistant", "answer", 1),
        _message("user", "second", 2, context={"doc": "Lyon is in France"}),
    ]
    messages = build_messages(history)
    assert [m["role"] for m in messages] == ["user", "assistant", "system", "user"]
    assert "Lyon is in France" in str(messages[2]["content"])
    assert "old" not in str(messages[2]["content"])


def test_partial_answer_goes_last_with_the_instruction_before_it() -> None:
    messages = with_partial(build_messages([_message("user", "q", 0)]), "Half an ans")
    assert messages[-1] == {"role": "assistant", "content": "Half an ans"}
    assert messages[-2] == {"role": "system", "content": CONTINUE_INSTRUCTION}


@pytest.mark.parametrize(
    ("partial", "chunks", "expected"),
    [
        ("The cat sat on the ", ["sat on the mat and then slept all afternoon in the warm sun."], "mat and then"),
        ("The cat sat on the ", ["mat and then slept all afternoon in the warm sun by the window."], "mat and then"),
        ("Hi", ["Hi there"], " there"),  # the whole short partial answer repeated
        ("ends with a", ["a word"], "a word"),  # a one-letter coincidence is not an overlap
        ("The cat ", ["The cat ", "sat"], "sat"),  # stream ended before the window filled
    ],
)
def test_overlap_at_the_join_is_trimmed(partial: str, chunks: list[str], expected: str) -> None:
    trimmer = OverlapTrimmer(partial, window=64, min_overlap=8)
    out = "".join(trimmer.feed(chunk) for chunk in chunks) + trimmer.flush()
    assert out.startswith(expected)
    assert out == "".join(chunks)[len("".join(chunks)) - len(out) :]


def test_without_partial_answer_nothing_is_held_back() -> None:
    trimmer = OverlapTrimmer("")
    assert trimmer.feed("Hello") == "Hello"
    assert trimmer.flush() == ""


class FakeHistory:
    def __init__(self, newest_first: list[StoredMessage], page: int) -> None:
        self.items = newest_first
        self.page = page
        self.calls = 0

    async def history_page(self, session_id, cursor):
        self.calls += 1
        start = int(cursor or 0)
        end = start + self.page
        return self.items[start:end], (str(end) if end < len(self.items) else None)


async def test_history_keeps_the_newest_messages_within_the_budget() -> None:
    chronological = [_message("user" if i % 2 == 0 else "assistant", f"m{i}" * 10, i) for i in range(10)]
    answer = _message("assistant", "", 20)
    source = FakeHistory(chronological[::-1], page=3)
    history = await load_history(source, SESSION, answer, budget_chars=65)  # type: ignore[arg-type]
    assert [m.content for m in history] == [m.content for m in chronological[-3:]]
    assert source.calls == 2  # stopped reading once the budget was full


async def test_history_skips_messages_written_after_the_answer_and_keeps_one_over_budget() -> None:
    question = _message("user", "x" * 500, 0)
    answer = _message("assistant", "", 1)
    later = _message("user", "later", 2)
    history = await load_history(FakeHistory([later, question], page=10), SESSION, answer, budget_chars=10)  # type: ignore[arg-type]
    assert history == [question]
