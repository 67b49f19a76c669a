"""Agent frameworks, run as their users run them (installed by `make clients` in a virtualenv of their own),
unchanged but for the gateway's base URL, with their default retries: LangGraph's prebuilt ReAct agent on
LangChain's ChatOpenAI, and pydantic-ai's agent on its OpenAI Chat Completions model or its Responses model.

Each names no session and resends its whole conversation, tool calls and results included, with every round of
tools, the calls' arguments re-serialized its own way from what it parsed: LangChain with Python's json.dumps
(spaced), pydantic-ai compact, however the model wrote them. Whichever, one run is one stored session holding the
question, each call, each result and the final answer, once each, in order.
"""

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from testing.upstream import Plan
from tests.chat_gateway.conftest import LocalService

pytestmark = pytest.mark.slow  # starts processes: left out of `make test-fast`

CLIENTS = Path(__file__).parents[1] / "clients"

QUESTION = "What's the weather in Lyon Fourvière, and what time is it there?"
CITY = "Lyon Fourvière ☀️"
# As a model writes them: spaced, not ASCII-escaped.
WEATHER = ("get_weather", json.dumps({"city": CITY}, ensure_ascii=False))
WEATHER_COMPACT = ("get_weather", json.dumps({"city": CITY}, ensure_ascii=False, separators=(",", ":")))  # OpenAI's
TIME = ("get_time", json.dumps({"tz": "Europe/Paris"}))
RESULTS = {"get_weather": f"18°C and sunny in {CITY}", "get_time": "14:05"}  # what the clients' tools return
FINAL = "It is 18°C and sunny in Lyon Fourvière, and 14:05."

Stored = tuple[str, str, list[tuple[str, Any]]]  # role, content, calls (name, parsed arguments)


@pytest.fixture(scope="module")
def persistence_app(persistence_app_on_both: LocalService) -> LocalService:
    """Every framework's test runs on both databases."""
    return persistence_app_on_both


@dataclass
class Case:
    """A run: the calls the model makes, round by round (one upstream request each, then one for the answer), the
    text it says with them, and the attempts dropped in the middle of a call's arguments (retried by the gateway
    itself) before the round they precede."""

    rounds: list[list[tuple[str, str]]]
    said: str = ""  # the text a round's calls come with
    drops: dict[int, int] = field(default_factory=dict)  # round index -> tokens sent before the connection drops

    def plans(self) -> list[Plan]:
        plans = []
        for index, calls in enumerate(self.rounds):
            if index in self.drops:
                plans.append(Plan(drop_after=self.drops[index], tool_calls=calls))
            plans.append(Plan(tool_calls=calls))
        return plans

    def generations(self) -> int:
        return len(self.rounds) + 1 + len(self.drops)

    def stored(self, question: str) -> list[Stored]:
        """The session as the client sent and received it: question, calls, results, answer."""
        messages: list[Stored] = [("user", question, [])]
        for calls in self.rounds:
            messages.append(("assistant", self.said, [(name, json.loads(arguments)) for name, arguments in calls]))
            messages += [("tool", RESULTS[name], []) for name, _ in calls]
        return [*messages, ("assistant", FINAL, [])]

    def ran(self) -> list[str]:
        return [
            f"{name}({next(iter(json.loads(arguments).values()))})"
            for calls in self.rounds
            for name, arguments in calls
        ]


CASES = {
    "one-call": Case([[WEATHER]]),
    "drop-in-arguments": Case([[WEATHER]], drops={0: 3}),  # the call's name and two fragments of its arguments
    "two-rounds": Case([[WEATHER], [TIME]], said="Let me look."),
    "compact-arguments": Case([[WEATHER_COMPACT]]),  # as OpenAI's own models write them
}


@pytest.fixture
def question() -> str:
    """A question of the run's own: the fake model's call ids are the same from one run to the next, and a
    conversation asked again goes on in the session that holds it (another test's)."""
    return f"{QUESTION} ({uuid.uuid4().hex[:8]})"


@pytest.fixture
def scripted(fake_openai: FastAPI) -> Iterator[FastAPI]:
    """The fake upstream, answering FINAL once every call has its result (before: what the calls come with)."""
    yield fake_openai
    fake_openai.state.answer = None


def _script(fake_openai: FastAPI, case: Case) -> None:
    expected_results = sum(len(calls) for calls in case.rounds)

    def answer(messages: list[dict[str, Any]]) -> str:
        results = sum(message.get("role") == "tool" for message in messages)
        return FINAL if results >= expected_results else case.said

    fake_openai.state.answer = answer
    fake_openai.state.plans.extend(case.plans())


def _sessions(store: httpx.Client) -> set[str]:
    return {session["id"] for session in store.get("/sessions", params={"limit": 100}).json()["items"]}


def _messages(store: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = store.get(f"/sessions/{session_id}/messages").json()["items"]
    return items


def _stored(message: dict[str, Any]) -> Stored:
    calls = [
        (call["function"]["name"], json.loads(call["function"]["arguments"])) for call in message["tool_calls"] or []
    ]
    return message["role"], message["content"] or "", calls


def _run(command: list[str | Path]) -> dict[str, Any]:
    ran = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stderr
    result: dict[str, Any] = json.loads(ran.stdout.strip().splitlines()[-1])
    return result


def _check(
    store: httpx.Client, fake_openai: FastAPI, before: set[str], case: Case, question: str, result: dict[str, Any]
) -> None:
    # (1) the run's answer, after running the tools the model called
    assert result == {"output": FINAL, "ran": case.ran()}
    # (4) one upstream generation per round, and one per dropped attempt
    assert len(fake_openai.state.requests) == case.generations(), fake_openai.state.requests
    # (2) one new session for the whole run
    new = _sessions(store) - before
    assert len(new) == 1, {session: [_stored(m) for m in _messages(store, session)] for session in new}
    (session_id,) = new
    # (3) what the client sent and received, once each, in order; each result answering its call
    messages = _messages(store, session_id)
    assert [_stored(message) for message in messages] == case.stored(question)
    calls = [call["id"] for message in messages for call in message["tool_calls"] or []]
    assert [message["tool_call_id"] for message in messages if message["role"] == "tool"] == calls


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_langgraph_agent_runs_its_tool_rounds_into_one_stored_session(
    clients: Path, gateway: LocalService, store: httpx.Client, scripted: FastAPI, question: str, case: Case
) -> None:
    """LangGraph's create_react_agent on ChatOpenAI (Chat Completions, not streamed): its requests, one per
    round, land in one session."""
    before = _sessions(store)
    _script(scripted, case)
    result = _run([clients / "python", CLIENTS / "langgraph_agent.py", gateway.url, question])
    _check(store, scripted, before, case, question, result)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("interface", ["chat", "responses"])
def test_a_pydantic_ai_agent_runs_its_tool_rounds_into_one_stored_session(
    clients: Path,
    gateway: LocalService,
    store: httpx.Client,
    scripted: FastAPI,
    question: str,
    interface: str,
    case: Case,
) -> None:
    """pydantic-ai's Agent on OpenAIChatModel (Chat Completions) or OpenAIResponsesModel (the Responses API): its
    requests, one per round, land in one session."""
    before = _sessions(store)
    _script(scripted, case)
    result = _run([clients / "python", CLIENTS / "pydantic_ai_agent.py", gateway.url, interface, question])
    _check(store, scripted, before, case, question, result)
