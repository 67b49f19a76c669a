"""The `chat` terminal client in a pseudo-terminal, as a user drives it, against the running services."""

import io
import os
import re
import signal
import sys
import warnings
from pathlib import Path

import httpx
import pexpect
import pytest
from fastapi import FastAPI

with warnings.catch_warnings():
    # Deprecated for pyte, which this project does not depend on; what the tests need of it works.
    warnings.simplefilter("ignore")
    from pexpect import ANSI

from testing.processes import Service
from testing.upstream import TEXT, VOCABULARY, Plan

pytestmark = pytest.mark.slow  # starts processes: left out of `make test-fast`

ROOT = Path(__file__).resolve().parents[3]
PROMPT = "you>"  # its space is a cursor move


class Terminal:
    """`chat` in a 40x100 pseudo-terminal; everything it wrote is kept, to be read as a screen would show it."""

    def __init__(self, gateway_process: Service, data: Path, *args: str, user: str = "terminal-user") -> None:
        env = os.environ | {
            "PYTHONPATH": str(ROOT),
            "TERM": "xterm-256color",
            "XDG_DATA_HOME": str(data),
            # No terminal answers a cursor position request here: prompt_toolkit would wait and then warn.
            "PROMPT_TOOLKIT_NO_CPR": "1",
        }
        command = ["-m", "chat_gateway.cli", "--url", gateway_process.url, "--user", user, *args]
        self.written = io.StringIO()
        self.child = pexpect.spawn(
            sys.executable, command, env=env, cwd=str(ROOT), dimensions=(40, 100), encoding="utf-8", timeout=30
        )
        self.child.logfile_read = self.written

    def expect(self, text: str) -> None:
        try:
            self.child.expect_exact(text)
        except pexpect.TIMEOUT:
            raise AssertionError(f"{text!r} never showed; the screen:\n{self.screen()}") from None

    def expect_pattern(self, pattern: str) -> re.Match[str]:
        try:
            self.child.expect(pattern)
        except pexpect.TIMEOUT:
            raise AssertionError(f"{pattern!r} never showed; the screen:\n{self.screen()}") from None
        assert isinstance(self.child.match, re.Match)
        return self.child.match

    def send(self, keys: str) -> None:
        self.child.send(keys)

    def ended(self) -> int:
        """The exit status, once the client has quit."""
        self.child.expect(pexpect.EOF)
        self.child.close()
        status = self.child.exitstatus
        assert status is not None  # it exited, not killed by a signal
        return status

    def screen(self, since: int = 0) -> str:
        """What the terminal shows of what was written from ``since`` on, the live region's redraws resolved:
        wider than the terminal so that no line wraps twice, tall enough to keep it all."""
        emulator = ANSI.ANSI(r=400, c=200)
        emulator.write(self.written.getvalue()[since:])
        return "\n".join(line.rstrip() for line in str(emulator).splitlines()).strip()

    def mark(self) -> int:
        return len(self.written.getvalue())


def _words(text: str) -> str:
    """Text as words: what stays of it once word-wrapped to a terminal's width."""
    return " ".join(text.split())


def _shown_answer(term: Terminal, since: int) -> str:
    """The answer to the question typed at ``since``: the screen between its line and the next prompt."""
    lines = term.screen(since).splitlines()
    assert lines[0].startswith(PROMPT)
    end = next(i for i, line in enumerate(lines) if i and line.startswith(PROMPT))
    return "\n".join(lines[1:end])


def _last_answer(gateway_process: Service, process_store: httpx.Client, user: str) -> dict:
    sessions = httpx.get(f"{gateway_process.url}/chat/sessions", params={"user_id": user}).json()["items"]
    assert len(sessions) == 1
    answer: dict = process_store.get(
        f"/sessions/{sessions[0]['id']}/messages/last", params={"role": "assistant"}
    ).json()
    return answer


@pytest.mark.parametrize("sample", [False, True], ids=["same words", "sampled"])
@pytest.mark.parametrize("delay", [0.05, 0.0], ids=["paced", "unpaced"])
def test_an_answer_is_shown_whole_through_a_gateway_restart(
    gateway_process: Service,
    process_store: httpx.Client,
    fake_openai: FastAPI,
    tmp_path: Path,
    delay: float,
    sample: bool,
) -> None:
    fake_openai.state.sample = sample
    fake_openai.state.plans.append(Plan(delay=delay))
    user = f"restarted-{delay}-{sample}"
    term = Terminal(gateway_process, tmp_path, user=user)
    term.expect(PROMPT)
    since = term.mark()
    term.send("Where is it?\r")
    term.expect_pattern("|".join(map(re.escape, ("Lyon sits", *VOCABULARY))))  # the answer has begun to show
    gateway_process.kill(signal.SIGKILL)
    if delay:  # mid-answer: the client says it waits
        term.expect("reconnecting…")
    gateway_process.start()
    term.expect(PROMPT)
    answer = _last_answer(gateway_process, process_store, user)
    assert answer["status"] == "complete"
    assert sample or answer["content"] == TEXT
    if delay:
        assert answer["attempts"] == 2  # the restarted gateway continued it
    # Shown once, all of it, the status line gone: the stored answer, whatever the model wrote after the kill.
    assert _words(_shown_answer(term, since)) == _words(answer["content"])
    term.send("\x04")
    assert term.ended() == 0


def test_ctrl_c_stops_the_display_and_resume_attaches_to_the_answer(
    gateway_process: Service, process_store: httpx.Client, fake_openai: FastAPI, tmp_path: Path
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.1))
    term = Terminal(gateway_process, tmp_path, user="impatient")
    term.expect(PROMPT)
    term.send("hi\r")
    term.expect("Lyon sits")
    term.child.sendintr()
    match = term.expect_pattern(
        r"\[display stopped; the answer goes on: `chat resume ([0-9a-f-]{36})` shows the rest\]"
    )
    message_id = match.group(1)
    term.expect(PROMPT)  # the display stopped, not the client
    term.send("\x04")
    assert term.ended() == 0
    answer = httpx.get(f"{gateway_process.url}/chat/messages/{message_id}").json()
    assert answer["status"] == "in_progress"

    resumed = Terminal(gateway_process, tmp_path, "resume", message_id, user="impatient")
    assert resumed.ended() == 0
    assert _words(resumed.screen()) == _words(TEXT)
    assert len(fake_openai.state.requests) == 1  # followed, not generated again
    assert process_store.get(f"/messages/{message_id}").json()["content"] == TEXT


def test_a_paste_is_one_question_and_questions_are_remembered(
    gateway_process: Service, process_store: httpx.Client, fake_openai: FastAPI, tmp_path: Path
) -> None:
    term = Terminal(gateway_process, tmp_path, user="paster")
    term.expect(PROMPT)
    term.send("\x1b[200~line1\nline2\nline3\x1b[201~")
    term.send("\r")
    term.expect("opens below.")
    term.expect(PROMPT)
    term.send("first\x1b\rsecond\r")  # Esc then Enter: a new line, not a question
    term.expect("opens below.")
    term.expect(PROMPT)
    session = httpx.get(f"{gateway_process.url}/chat/sessions", params={"user_id": "paster"}).json()["items"][0]["id"]
    messages = process_store.get(f"/sessions/{session}/messages").json()["items"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "line1\nline2\nline3"),
        ("assistant", TEXT),
        ("user", "first\nsecond"),
        ("assistant", TEXT),
    ]
    assert len(fake_openai.state.requests) == 2

    since = term.mark()
    term.send("\x1b[A")  # Up: the last question
    term.expect("second")
    term.send("\x1b[A\x1b[A")  # Up within it to its first line, then to the question before
    term.expect("line3")
    assert "line1" in term.screen(since)
    history = (tmp_path / "durable-chat" / "history").read_text()
    assert "+line1\n+line2\n+line3\n" in history
    term.send("\x03")  # Ctrl-C clears the line; Ctrl-D on an empty one quits
    term.send("\x04")
    assert term.ended() == 0
    assert len(process_store.get(f"/sessions/{session}/messages").json()["items"]) == 4


def test_delete_asks_first_and_search_shows_the_matched_words(
    gateway_process: Service, process_store: httpx.Client, fake_openai: FastAPI, tmp_path: Path
) -> None:
    asked = httpx.post(
        f"{gateway_process.url}/chat", json={"message": "Tell me about Lyon", "user_id": "deleter"}, timeout=30
    )
    session = asked.json()["session_id"]

    found = Terminal(gateway_process, tmp_path, "search", "quenelles", user="deleter")
    assert found.ended() == 0
    screen = found.screen()
    assert session in screen
    assert "quenelles" in screen
    assert "**" not in screen  # shown in bold instead

    kept = Terminal(gateway_process, tmp_path, "delete", session, user="deleter")
    kept.expect("Delete 'Tell me about Lyon' and all its messages? [y/N]")
    kept.send("\r")  # the default: no
    kept.expect("not deleted")
    assert kept.ended() == 1
    assert httpx.get(f"{gateway_process.url}/chat/sessions/{session}").status_code == 200

    deleted = Terminal(gateway_process, tmp_path, "delete", session, user="deleter")
    deleted.expect("[y/N]")
    deleted.send("y\r")
    deleted.expect("deleted")
    assert deleted.ended() == 0
    assert httpx.get(f"{gateway_process.url}/chat/sessions/{session}").status_code == 404
