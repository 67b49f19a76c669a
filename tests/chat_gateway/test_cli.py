"""The `chat` terminal client, driven as a user drives it, against the running services."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.chat_gateway.conftest import Service, wait_for
from tests.fake_openai import TEXT, Plan

pytestmark = pytest.mark.slow  # starts processes: left out of `make test-fast`

CHAT = [sys.executable, "-m", "chat_gateway.cli"]


def _chat(gateway: Service, *args: str, stdin: str = "", user: str = "cli-user") -> subprocess.CompletedProcess[str]:
    command = [*CHAT, "--url", gateway.url, "--user", user, *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=False)


def _only_session(gateway: Service, user: str = "cli-user") -> str:
    listed = _chat(gateway, "sessions", user=user).stdout.split()
    return next(word for word in listed if len(word) == 36)


def test_chat_command_is_installed() -> None:
    installed = Path(sys.executable).parent / "chat"
    result = subprocess.run([str(installed), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "sessions" in result.stdout


def test_a_conversation_then_every_session_command(gateway: Service, fake_openai: FastAPI) -> None:
    talk = _chat(gateway, stdin="Tell me about Lyon\nAnd more?\n")
    assert talk.returncode == 0, talk.stderr
    assert talk.stdout.count(TEXT) == 2
    # Both questions went to one session: the second was sent with the first as history.
    assert [m["role"] for m in fake_openai.state.requests[-1]["messages"]] == ["user", "assistant", "user"]

    session = _only_session(gateway)
    shown = _chat(gateway, "show", session).stdout
    assert "user: Tell me about Lyon" in shown
    assert f"assistant: {TEXT}" in shown

    assert _chat(gateway, "rename", session, "Lyon trip").stdout.strip() == "renamed: Lyon trip"
    assert _chat(gateway, "favorite", session).stdout.strip() == "favorite"
    listed = _chat(gateway, "sessions").stdout
    assert listed.startswith(f"* {session}")
    assert "Lyon trip" in listed
    markdown = _chat(gateway, "export", session, "--format", "md").stdout
    assert markdown.startswith("# Lyon trip\n")
    assert '"format": "durable-chat/session"' in _chat(gateway, "export", session, "--format", "json").stdout

    found = httpx.get(f"{gateway.url}/chat/search", params={"q": "quenelles", "user_id": "cli-user"}).json()
    # Both answers of the conversation mention it.
    assert [(hit["kind"], hit["session_id"]) for hit in found["items"]] == [("message", session)] * 2
    assert "**quenelles**" in found["items"][0]["snippet"]

    refused = _chat(gateway, "delete", session)  # no terminal to ask on
    assert refused.returncode == 1
    assert refused.stderr == "error: not deleted: confirm with --yes (no terminal to ask on)\n"
    assert _chat(gateway, "delete", "--yes", session).stdout.strip() == "deleted"
    assert _chat(gateway, "sessions").stdout.strip() == "no sessions yet"
    missing = _chat(gateway, "show", session)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: 404")


def test_continue_a_session_and_resume_an_interrupted_answer(
    gateway: Service, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.extend([Plan(drop_after=5), Plan(status=401)])
    failed = _chat(gateway, stdin="hi\n", user="resumer")
    assert "[answer failed:" in failed.stdout
    session = _only_session(gateway, user="resumer")
    resumed = _chat(gateway, "resume", session, user="resumer")  # a session id: its last answer
    assert resumed.returncode == 0, resumed.stderr
    # The whole answer is shown: the saved part at once, then the continuation as it grows.
    assert resumed.stdout.strip() == TEXT
    answer = store.get(f"/sessions/{session}/messages/last", params={"role": "assistant"}).json()
    assert (answer["content"], answer["status"]) == (TEXT, "complete")
    again = _chat(gateway, "--session", session, stdin="again\n", user="resumer")
    assert TEXT in again.stdout
    assert len(store.get(f"/sessions/{session}/messages").json()["items"]) == 4


def test_ctrl_c_stops_the_display_not_the_answer(gateway: Service, store: httpx.Client, fake_openai: FastAPI) -> None:
    fake_openai.state.plans.clear()  # this answer, and no plan an earlier test left, is slow
    fake_openai.state.plans.append(Plan(delay=0.1))
    process = subprocess.Popen(
        [*CHAT, "--url", gateway.url, "--user", "impatient"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as in a terminal, even when the tests run where SIGINT is ignored (a background job).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdin is not None
    process.stdin.write("hi\n")
    process.stdin.flush()
    assert process.stdout is not None
    # The answer has begun to show (read from the pipe itself: the text wrapper would keep what it read ahead).
    first = os.read(process.stdout.fileno(), 4096).decode()
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=30)  # then end of input: the client quits
    output = first + rest
    assert process.returncode == 0
    assert "[display stopped; the answer goes on" in output
    shown = output.split("\n[display stopped")[0]
    assert shown
    assert TEXT.startswith(shown)
    assert shown != TEXT
    session = wait_for(lambda: _chat(gateway, "sessions", user="impatient").stdout.split()[0:1])[0]
    answer = wait_for(
        lambda: (
            (m := store.get(f"/sessions/{session}/messages/last", params={"role": "assistant"}).json())["status"]
            == "complete"
            and m
        )
    )
    assert answer["content"] == TEXT
