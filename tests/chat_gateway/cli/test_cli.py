"""The `chat` terminal client, driven as a user drives it, against the running services."""

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from testing.processes import Service
from testing.upstream import TEXT, Plan
from tests.chat_gateway.conftest import wait_for

pytestmark = pytest.mark.slow  # starts processes: left out of `make test-fast`

CHAT = [sys.executable, "-m", "chat_gateway.cli"]


def _chat(
    gateway_process: Service, *args: str, stdin: str = "", user: str = "cli-user"
) -> subprocess.CompletedProcess[str]:
    command = [*CHAT, "--url", gateway_process.url, "--user", user, *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, check=False)


def _only_session(gateway_process: Service, user: str = "cli-user") -> str:
    listed = _chat(gateway_process, "sessions", user=user).stdout.split()
    return next(word for word in listed if len(word) == 36)


def test_chat_command_is_installed() -> None:
    installed = Path(sys.executable).parent / "chat"
    result = subprocess.run([str(installed), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "sessions" in result.stdout


def test_a_conversation_then_every_session_command(gateway_process: Service, fake_openai: FastAPI) -> None:
    talk = _chat(gateway_process, stdin="Tell me about Lyon\nAnd more?\n")
    assert talk.returncode == 0, talk.stderr
    assert talk.stdout.count(TEXT) == 2
    # Both questions went to one session: the second was sent with the first as history.
    assert [m["role"] for m in fake_openai.state.requests[-1]["messages"]] == ["user", "assistant", "user"]

    session = _only_session(gateway_process)
    shown = _chat(gateway_process, "show", session).stdout
    assert "user: Tell me about Lyon" in shown
    assert f"assistant: {TEXT}" in shown

    assert _chat(gateway_process, "rename", session, "Lyon trip").stdout.strip() == "renamed: Lyon trip"
    assert _chat(gateway_process, "favorite", session).stdout.strip() == "favorite"
    listed = _chat(gateway_process, "sessions").stdout
    assert listed.startswith(f"* {session}")
    assert "Lyon trip" in listed
    markdown = _chat(gateway_process, "export", session, "--format", "md").stdout
    assert markdown.startswith("# Lyon trip\n")
    assert '"format": "durable-chat/session"' in _chat(gateway_process, "export", session, "--format", "json").stdout

    found = httpx.get(f"{gateway_process.url}/chat/search", params={"q": "quenelles", "user_id": "cli-user"}).json()
    # Both answers of the conversation mention it.
    assert [(hit["kind"], hit["session_id"]) for hit in found["items"]] == [("message", session)] * 2
    assert "**quenelles**" in found["items"][0]["snippet"]

    refused = _chat(gateway_process, "delete", session)  # no terminal to ask on
    assert refused.returncode == 1
    assert refused.stderr == "error: not deleted: confirm with --yes (no terminal to ask on)\n"
    assert _chat(gateway_process, "delete", "--yes", session).stdout.strip() == "deleted"
    assert _chat(gateway_process, "sessions").stdout.strip() == "no sessions yet"
    missing = _chat(gateway_process, "show", session)
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: 404")


def test_continue_a_session_and_resume_an_interrupted_answer(
    gateway_process: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.extend([Plan(drop_after=5), Plan(status=401)])
    failed = _chat(gateway_process, stdin="hi\n", user="resumer")
    assert "[answer failed:" in failed.stdout
    session = _only_session(gateway_process, user="resumer")
    resumed = _chat(gateway_process, "resume", session, user="resumer")  # a session id: its last answer
    assert resumed.returncode == 0, resumed.stderr
    # The whole answer is shown: the saved part at once, then the continuation as it grows.
    assert resumed.stdout.strip() == TEXT
    answer = process_store.get(f"/sessions/{session}/messages/last", params={"role": "assistant"}).json()
    assert (answer["content"], answer["status"]) == (TEXT, "complete")
    again = _chat(gateway_process, "--session", session, stdin="again\n", user="resumer")
    assert TEXT in again.stdout
    assert len(process_store.get(f"/sessions/{session}/messages").json()["items"]) == 4


def test_ctrl_c_stops_the_display_not_the_answer(
    gateway_process: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.clear()  # this answer, and no plan an earlier test left, is slow
    fake_openai.state.plans.append(Plan(delay=0.1))
    process = subprocess.Popen(
        [*CHAT, "--url", gateway_process.url, "--user", "impatient"],
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
    session = wait_for(lambda: _chat(gateway_process, "sessions", user="impatient").stdout.split()[0:1])[0]
    answer = wait_for(
        lambda: (
            (m := process_store.get(f"/sessions/{session}/messages/last", params={"role": "assistant"}).json())[
                "status"
            ]
            == "complete"
            and m
        )
    )
    assert answer["content"] == TEXT


def _answering(gateway_process: Service, user: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`chat` asked one question, once its answer has begun to show: the process and what it showed."""
    process = subprocess.Popen(
        [*CHAT, "--url", gateway_process.url, "--user", user, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write("Tell me about Lyon\n")
    process.stdin.flush()  # closed by communicate(): the client quits once the answer has ended
    return process, os.read(process.stdout.fileno(), 4096).decode()


@pytest.mark.parametrize("sample", [False, True], ids=["same words", "sampled"])
def test_an_answer_is_followed_through_a_gateway_restart_without_a_repeat_or_a_gap(
    gateway_process: Service, process_store: httpx.Client, fake_openai: FastAPI, sample: bool
) -> None:
    """With a model that samples too: what the client printed before the kill is the stored answer's start."""
    fake_openai.state.sample = sample
    fake_openai.state.plans.append(Plan(delay=0.05))
    user = f"reconnecting-{sample}"
    process, first = _answering(gateway_process, user)
    gateway_process.kill(signal.SIGKILL)
    gateway_process.start()
    rest, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    assert errors == "reconnecting…\n"
    session = _only_session(gateway_process, user=user)
    answer = process_store.get(f"/sessions/{session}/messages/last", params={"role": "assistant"}).json()
    assert first + rest == answer["content"] + "\n"
    assert answer["attempts"] == 2
    assert sample or answer["content"] == TEXT


def test_the_client_gives_up_in_time_and_says_how_to_go_on(
    gateway_process: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.05))
    process, first = _answering(gateway_process, "given-up", "--reconnect-for", "1")
    gateway_process.kill(signal.SIGKILL)
    rest, errors = process.communicate(timeout=60)
    assert process.returncode == 1
    message = re.search(r"`chat resume ([0-9a-f-]{36})` follows it", errors)
    assert message is not None, errors
    assert errors.startswith("reconnecting…\n[the gateway has been unreachable for 1 s")
    shown = first + rest
    assert TEXT.startswith(shown.removesuffix("\n"))
    assert shown.endswith("\n")

    gateway_process.start()  # the answer was not lost: it is continued, and `chat resume` follows it to its end
    resumed = _chat(gateway_process, "resume", message.group(1), user="given-up")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == TEXT + "\n"


def test_resume_follows_an_answer_its_restarted_gateway_continues(
    gateway_process: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    """Not a 409 while the answer is in progress: `chat resume SESSION` attaches to its last answer."""
    fake_openai.state.plans.append(Plan(delay=0.05))
    question = "Where is the orphan?"
    body = {"message": question, "stream": True, "user_id": "orphaned"}
    with httpx.stream("POST", f"{gateway_process.url}/chat", json=body, timeout=30) as response:
        session = json.loads(next(line for line in response.iter_lines() if line.startswith("data:"))[5:])
        wait_for(lambda: process_store.get(f"/messages/{session['message_id']}").json()["content"])  # it has begun
        gateway_process.kill(signal.SIGKILL)
    gateway_process.start()
    resumed = _chat(gateway_process, "resume", session["session_id"], user="orphaned")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == TEXT + "\n"
    # Continued by the restarted gateway (its recovery), not generated again by the client.
    asked = [r["messages"] for r in fake_openai.state.requests if question in str(r["messages"])]
    assert len(asked) == 2
    assert asked[-1][-1]["role"] == "assistant"


def test_search_and_what_every_listing_says_when_empty(gateway_process: Service, fake_openai: FastAPI) -> None:
    assert _chat(gateway_process, "sessions", user="newcomer").stdout == "no sessions yet\n"
    assert _chat(gateway_process, "search", "quenelles", user="newcomer").stdout == "nothing found for 'quenelles'\n"
    assert _chat(gateway_process, "usage", user="newcomer").stdout.startswith("no usage from ")
    now, session = datetime.now(UTC).isoformat(), str(uuid.uuid4())
    stored = {"id": session, "user_id": "newcomer", "title": "Empty", "created_at": now, "updated_at": now}
    empty = {"format": "durable-chat/session", "version": 2, "session": stored, "messages": []}
    imported = httpx.post(f"{gateway_process.url}/chat/sessions/import", json=empty, timeout=30)
    assert imported.status_code == 201, imported.text
    assert _chat(gateway_process, "show", session, user="newcomer").stdout == "no messages in this session yet\n"

    assert _chat(gateway_process, "--session", session, stdin="Tell me about Lyon\n", user="newcomer").stdout
    found = _chat(gateway_process, "search", "quenelles", user="newcomer").stdout.splitlines()
    assert found[0].startswith(f"{session}  ")
    assert found[0].endswith("  Empty")
    assert found[1].startswith("    assistant: ")
    assert "**quenelles**" in found[1]  # the matched words, marked as the gateway marks them


def test_models_are_listed_and_one_is_picked(gateway: Service, fake_openai: FastAPI) -> None:
    fake_openai.state.models = ["fake-model", "other-model"]
    assert _chat(gateway, "models").stdout == "fake-model  (fake)\nother-model  (fake)\n"
    talk = _chat(gateway, "--model", "other-model", stdin="Tell me about Lyon\n")
    assert talk.returncode == 0, talk.stderr
    assert [request["model"] for request in fake_openai.state.requests] == ["other-model"]
