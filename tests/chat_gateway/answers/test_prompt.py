import uuid
from datetime import UTC, datetime, timedelta

import pytest

from chat_gateway.answers.prompt import (
    CONTINUE_INSTRUCTION,
    Continuation,
    build_messages,
    continuation_anchor,
    load_history,
)
from chat_gateway.config import ContinuationMethod
from shared import MessageRole, MessageStatus
from shared.contract import MessageDetail
from shared.resources import FunctionCall, ToolCall
from testing.chunks import tokens
from testing.upstream import TEXT
from tests.chat_gateway.conftest import stored_message

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SESSION = uuid.uuid4()

pytestmark = pytest.mark.anyio


def _message(role: str, content: str, minute: int, context=None) -> MessageDetail:
    return stored_message(
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


TABLE = "| a | b |\n" + "| 1 | 1 |\n" * 6
CODE = "if (a) {\n  if (b) {\n    f();\n  }\n}\nif (a) {\n  if (b) {\n    f();\n  }\n}\n"
LAUGH = "ha " * 29
COUNT = "1, 2, 3, " * 9
REPEATING_TEXTS = [TABLE, CODE, LAUGH, COUNT]
METHODS: list[ContinuationMethod] = ["exact", "vllm", "prefix", "restart"]


def _joined(continuation: Continuation, reply: str) -> str:
    """The answer once ``reply`` (sent a token at a time) is joined to the partial one."""
    pieces = [continuation.feed(token) for token in tokens(reply)]
    return continuation.partial + "".join(pieces) + continuation.flush()


@pytest.mark.parametrize("text", REPEATING_TEXTS)
def test_an_exact_continuation_is_joined_as_it_is_at_every_split_point(text: str) -> None:
    """The answer's own repeats (rows, braces, "ha ha") are never cut: an exact upstream repeats nothing."""
    for split in range(1, len(text)):
        assert _joined(Continuation(text[:split], "exact"), text[split:]) == text, split


@pytest.mark.parametrize("text", [*REPEATING_TEXTS, TEXT])
def test_a_restarted_continuation_loses_the_anchor_it_was_asked_for_and_nothing_else(text: str) -> None:
    for split in range(1, len(text)):
        continuation = Continuation(text[:split], "restart")
        assert continuation.anchor
        assert text[:split].endswith(continuation.anchor)
        assert _joined(continuation, continuation.anchor + text[split:]) == text, split
        # A model that ignores the instruction loses nothing, unless its text begins with the anchor itself
        # (after whitespace), or, ending there, is the anchor's start: the residual risk the docstring states.
        ignored, rest = Continuation(text[:split], "restart"), text[split:]
        said, asked = rest.lstrip(), ignored.anchor.lstrip()
        if not (said.startswith(asked) or asked.startswith(said)):
            assert _joined(ignored, rest) == text, split


def test_a_reply_that_stops_inside_the_anchor_adds_nothing() -> None:
    continuation = Continuation("The cat sat on the", "restart")
    assert continuation.feed(continuation.anchor[:5]) == ""
    assert continuation.flush() == ""


def test_the_anchor_is_the_last_words() -> None:
    assert continuation_anchor("Hi there") == "Hi there"
    anchor = continuation_anchor("x" * 100 + " the old town keeps Renaissance courtyards, hidden passages", 40)
    assert anchor == "keeps Renaissance courtyards, hidden passages"[-len(anchor) :]
    assert anchor.startswith("Renaissance")
    assert continuation_anchor("y" * 100, 40) == "y" * 40


def test_the_partial_answer_goes_last_and_only_a_restart_is_told_what_to_do() -> None:
    """An upstream that continues the text itself is asked with the answer's own prompt: an instruction would
    make it another prompt, and so another answer."""
    prompt = build_messages([_message("user", "q", 0)])
    for method in ("exact", "vllm"):
        continued = Continuation("Half an ans", method).messages(prompt)
        assert continued == [*prompt, {"role": "assistant", "content": "Half an ans"}]
    wordless = Continuation("  ", "restart").messages(prompt)
    assert wordless[-2] == {"role": "system", "content": CONTINUE_INSTRUCTION}
    restarted = Continuation("It was half an ans", "restart").messages(prompt)
    assert restarted[-1] == {"role": "assistant", "content": "It was half an ans"}
    assert "[[It was half an ans]]" in str(restarted[-2]["content"])
    for method in METHODS:
        assert Continuation("", method).messages(prompt) == prompt


def test_a_prefix_upstream_gets_the_partial_answer_marked_as_its_prefix() -> None:
    """Mistral's API spec (AssistantMessage.prefix): "Set this to `true` when adding an assistant message as prefix
    to condition the model response"; DeepSeek's Chat Prefix Completion asks the same of the last message."""
    messages = Continuation("Half an ans", "prefix").messages(build_messages([_message("user", "q", 0)]))
    assert messages[-1] == {"role": "assistant", "content": "Half an ans", "prefix": True}
    assert messages[-2] == {"role": "user", "content": "q"}


def test_only_a_vllm_continuation_carries_vllms_two_flags() -> None:
    """vLLM's ChatCompletionRequest (vllm/entrypoints/openai/protocol.py): ``continue_final_message`` leaves the
    final message "open-ended, without any EOS tokens", and "cannot be used at the same time as
    `add_generation_prompt`", which is true unless the request says otherwise."""
    assert Continuation("Half an ans", "vllm").request_fields() == {
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
    assert Continuation("", "vllm").request_fields() == {}  # a new answer: the question is last, not continued
    for method in ("exact", "prefix", "restart"):
        assert Continuation("Half an ans", method).request_fields() == {}


def test_without_partial_answer_nothing_is_held_back() -> None:
    for method in METHODS:
        continuation = Continuation("", method)
        assert continuation.feed("Hello") == "Hello"
        assert continuation.flush() == ""


PARTIAL = "Lyon sits where the Rhone meets the Saone. Its old town"


@pytest.mark.parametrize(
    ("reply", "joined"),
    [
        ("[[{a}]] keeps", " keeps"),
        ("[[{a}]]keeps", "keeps"),
        ("  [[ {a} ]] keeps", " keeps"),
        ("\n[[{a}\n]]\n\nkeeps", "\n\nkeeps"),
        ("{a} keeps", " keeps"),
        (" \n{a} keeps", " keeps"),
        ("[[{a} keeps", " keeps"),
    ],
    ids=["brackets", "brackets-then-word", "spaces-inside", "newlines", "bare", "space-before", "unclosed"],
)
def test_the_anchor_echoed_with_or_without_its_brackets_is_the_one_repeat_cut(reply: str, joined: str) -> None:
    """A model that obeys loosely writes the brackets too: the requested repeat goes, with whatever whitespace is
    before it or inside its brackets, and what follows stays as it was sent (a space after "]]" is the reply's)."""
    for pieces in (1, 2, 3, 40):  # the echo split across chunks wherever it falls
        continuation = Continuation(PARTIAL, "restart")
        sent = reply.format(a=continuation.anchor)
        chunks = [sent[i * len(sent) // pieces : (i + 1) * len(sent) // pieces] for i in range(pieces)]
        assert "".join(continuation.feed(chunk) for chunk in chunks) + continuation.flush() == joined, pieces


def test_a_reply_that_only_looks_repeated_is_kept() -> None:
    """Words of the partial answer, but not the anchor the model was asked for: nothing is cut, in brackets or not."""
    assert Continuation(PARTIAL, "restart").anchor == "the Rhone meets the Saone. Its old town"
    for reply in (
        "the Saone. Its old town keeps",
        "[[Its old town]] keeps",
        "the Rhone meets the sea.",
        "[[the Rhone meets]] the Saone",
        "Its old town",
    ):
        continuation = Continuation(PARTIAL, "restart")
        assert "".join(continuation.feed(t) for t in tokens(reply)) + continuation.flush() == reply, reply
    echoed = "[[the Rhone meets the Saone. Its old town]] keeps"
    exact = Continuation(PARTIAL, "exact")  # only restart asked for a repeat: an exact upstream's text is its own
    assert "".join(exact.feed(t) for t in tokens(echoed)) + exact.flush() == echoed


def test_a_prefix_echoed_whole_is_cut_and_a_reply_without_it_kept() -> None:
    """Mistral's API returns the prefix as the start of its reply (its cookbook: "Optionally, you can remove the
    prefix", ``content[len(prefix):]``); DeepSeek's sends only what follows. Both join the same."""
    rest = " keeps Renaissance courtyards."
    for reply in (PARTIAL + rest, rest):
        continuation = Continuation(PARTIAL, "prefix")
        assert "".join(continuation.feed(t) for t in tokens(reply)) + continuation.flush() == rest, reply
    stopped = Continuation(PARTIAL, "prefix")  # stopped inside its echo: it added nothing
    assert (stopped.feed(PARTIAL[:10]), stopped.flush()) == ("", "")
    starts_alike = Continuation("Lyon, Lyon", "prefix")  # only the whole prefix is the echo
    assert [starts_alike.feed("Lyon"), starts_alike.feed("naise")] == ["", "Lyonnaise"]


class FakeHistory:
    def __init__(self, newest_first: list[MessageDetail], page: int) -> None:
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


async def test_the_budget_never_cuts_a_round_of_tool_calls_in_two() -> None:
    """Results larger than the budget still go in with the call they answer: a result alone is refused."""
    call = ToolCall(id="call_1", function=FunctionCall(name="read_file", arguments='{"path": "a.py"}'))
    chronological = [
        _message("user", "Fix a.py", 0),
        _message("assistant", "", 1).model_copy(update={"tool_calls": [call]}),
        _message("tool", "x" * 1000, 2).model_copy(update={"tool_call_id": "call_1"}),
        _message("tool", "y" * 1000, 3).model_copy(update={"tool_call_id": "call_2"}),
    ]
    answer = _message("assistant", "", 4)
    history = await load_history(FakeHistory(chronological[::-1], page=2), SESSION, answer, budget_chars=100)  # type: ignore[arg-type]
    assert [m.role for m in history] == ["assistant", "tool", "tool"]
    shown = build_messages(history)
    assert shown[0] == {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]}
    assert shown[1] == {"role": "tool", "content": "x" * 1000, "tool_call_id": "call_1"}


def test_calls_nobody_answered_and_results_of_no_call_are_left_out() -> None:
    """A /chat session that went on with a question after an answer's calls still makes a valid prompt."""
    answered = ToolCall(id="call_1", function=FunctionCall(name="f", arguments="{}"))
    ignored = ToolCall(id="call_2", function=FunctionCall(name="g", arguments="{}"))
    history = [
        _message("user", "Do it", 0),
        _message("assistant", "On it.", 1).model_copy(update={"tool_calls": [answered, ignored]}),
        _message("tool", "done", 2).model_copy(update={"tool_call_id": "call_1"}),
        _message("tool", "stray", 3).model_copy(update={"tool_call_id": "call_9"}),
        _message("assistant", "", 4).model_copy(update={"tool_calls": [ignored]}),
        _message("user", "Thanks", 5),
    ]
    assert build_messages(history)[1:] == [
        {"role": "assistant", "content": "On it.", "tool_calls": [answered.model_dump()]},
        {"role": "tool", "content": "done", "tool_call_id": "call_1"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Thanks"},
    ]
