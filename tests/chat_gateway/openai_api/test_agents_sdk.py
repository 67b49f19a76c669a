"""OpenAI's Agents SDK, run as its users run it (tests/chat_gateway/clients/agents_sdk.py, in the clients' own
virtualenv), unchanged but for the gateway's base URL: whatever it does (tool rounds, a handoff, instructions
that change each round, an OpenAIConversationsSession, Responses chained by previous_response_id), one run is one
stored session, holding what the client sent and was answered, once each, and each upstream generation is asked
for once (once more per scripted drop)."""

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from testing.chunks import tokens
from testing.upstream import Plan
from tests.chat_gateway.conftest import LocalService

pytestmark = pytest.mark.slow  # starts processes: left out of `make test-fast`

CLIENT = Path(__file__).parents[1] / "clients" / "agents_sdk.py"

QUESTION = "Quel temps fait-il à Lyon Fourvière ☀️ ?"
FOLLOW_UP = "Et demain, à Fourvière ?"
THANKS = "Merci, à bientôt ☀️"
ANSWER = "Il fait beau à Lyon Fourvière ☀️, 18 °C l'après-midi."
WEATHER = ("get_weather", '{"city": "Lyon Fourvière ☀️"}')
WEATHER_OUTPUT = "18°C and sunny in Lyon Fourvière ☀️"
TIME = ("get_time", '{"tz": "Europe/Paris"}')
RAN_WEATHER = "get_weather(Lyon Fourvière ☀️)"
# Dropped after the call's name and two fragments of its arguments: the gateway asks for the answer again.
DROP_IN_WEATHER = Plan(tool_calls=[WEATHER], drop_after=len(tokens(ANSWER)) + 3)

Message = tuple[str, str, list[str]]  # role, content, names of the calls


@pytest.fixture(scope="module")
def persistence_app(persistence_app_on_both: LocalService) -> LocalService:
    """Every test here runs on both databases."""
    return persistence_app_on_both


def _run(clients: Path, gateway: LocalService, *arguments: str) -> dict[str, Any]:
    """The client's run of a scenario: what it prints on its last line."""
    ran = subprocess.run(
        [clients / "python", CLIENT, gateway.url, *arguments], capture_output=True, text=True, timeout=180, check=False
    )
    assert ran.returncode == 0, ran.stderr[-6000:]
    result: dict[str, Any] = json.loads(ran.stdout.strip().splitlines()[-1])
    return result


def _sessions(store: httpx.Client) -> set[str]:
    return {session["id"] for session in store.get("/sessions", params={"limit": 100}).json()["items"]}


def _stored(store: httpx.Client, session_id: str) -> list[Message]:
    items = store.get(f"/sessions/{session_id}/messages").json()["items"]
    return [(m["role"], m["content"], [call["function"]["name"] for call in m["tool_calls"] or []]) for m in items]


def _as_sent(conversation: list[list[Any]]) -> list[Message]:
    """The client's conversation (the script's [role, text, calls] lists) as ``_stored`` gives it."""
    return [(role, text, calls) for role, text, calls in conversation]


def _one_new_session(store: httpx.Client, before: set[str]) -> str:
    made = _sessions(store) - before
    assert len(made) == 1, f"the run made {len(made)} sessions: {[_stored(store, s) for s in made]}"
    (session_id,) = made
    return session_id


def _weather_turn(question: str = QUESTION) -> list[Message]:
    return [
        ("user", question, []),
        ("assistant", ANSWER, ["get_weather"]),
        ("tool", WEATHER_OUTPUT, []),
        ("assistant", ANSWER, []),
    ]


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize("interface", ["responses", "chat"])
def test_tool_rounds_with_a_drop_in_a_call_land_once_in_one_session(
    clients: Path, gateway: LocalService, store: httpx.Client, fake_openai: FastAPI, interface: str, streamed: bool
) -> None:
    """Runner.run or Runner.run_streamed, with the Responses model or OpenAIChatCompletionsModel: two tool rounds,
    the first call's arguments cut by a drop the gateway retries itself."""
    before = _sessions(store)
    fake_openai.state.text = ANSWER
    fake_openai.state.plans.extend([DROP_IN_WEATHER, Plan(tool_calls=[WEATHER]), Plan(tool_calls=[TIME])])
    result = _run(clients, gateway, f"tools-{interface}{'-streamed' if streamed else ''}")
    expected = [
        ("user", QUESTION, []),
        ("assistant", ANSWER, ["get_weather"]),
        ("tool", WEATHER_OUTPUT, []),
        ("assistant", ANSWER, ["get_time"]),
        ("tool", "14:05", []),
        ("assistant", ANSWER, []),
    ]
    assert (result["outputs"], result["ran"]) == ([ANSWER], [RAN_WEATHER, "get_time(Europe/Paris)"])
    assert _as_sent(result["conversation"]) == expected
    assert _stored(store, _one_new_session(store, before)) == expected
    assert len(fake_openai.state.requests) == 3 + 1  # three rounds, one drop


@pytest.mark.parametrize("interface", ["responses", "chat"])
def test_a_handoff_and_the_specialists_tool_round_land_in_one_session(
    clients: Path, gateway: LocalService, store: httpx.Client, fake_openai: FastAPI, interface: str
) -> None:
    """The triage agent hands off (transfer_to_specialist); the specialist, with instructions of its own, calls
    a tool (its arguments cut by a drop) and answers."""
    before = _sessions(store)
    fake_openai.state.text = ANSWER
    fake_openai.state.plans.extend(
        [Plan(tool_calls=[("transfer_to_specialist", "{}")]), DROP_IN_WEATHER, Plan(tool_calls=[WEATHER])]
    )
    result = _run(clients, gateway, f"handoff-{interface}")
    expected = [
        ("user", QUESTION, []),
        ("assistant", ANSWER, ["transfer_to_specialist"]),
        ("tool", json.dumps({"assistant": "specialist"}), []),
        ("assistant", ANSWER, ["get_weather"]),
        ("tool", WEATHER_OUTPUT, []),
        ("assistant", ANSWER, []),
    ]
    assert (result["outputs"], result["agent"], result["ran"]) == ([ANSWER], "specialist", [RAN_WEATHER])
    assert _as_sent(result["conversation"]) == expected
    assert _stored(store, _one_new_session(store, before)) == expected
    assert len(fake_openai.state.requests) == 3 + 1


@pytest.mark.parametrize("interface", ["responses", "chat"])
def test_instructions_that_change_each_round_keep_one_session(
    clients: Path, gateway: LocalService, store: httpx.Client, fake_openai: FastAPI, interface: str
) -> None:
    """``instructions=lambda context, agent: ...`` says which round it is: each round's system prompt differs
    from the one before, and the upstream is shown each round's own (the retry after a drop, its round's)."""
    before = _sessions(store)
    fake_openai.state.text = ANSWER
    fake_openai.state.plans.extend([DROP_IN_WEATHER, Plan(tool_calls=[WEATHER]), Plan(tool_calls=[TIME])])
    result = _run(clients, gateway, f"dynamic-{interface}")
    expected = [
        ("user", QUESTION, []),
        ("assistant", ANSWER, ["get_weather"]),
        ("tool", WEATHER_OUTPUT, []),
        ("assistant", ANSWER, ["get_time"]),
        ("tool", "14:05", []),
        ("assistant", ANSWER, []),
    ]
    assert result["outputs"] == [ANSWER]
    assert _as_sent(result["conversation"]) == expected
    said = [f"Round {n} for weather: answer with the weather and the time." for n in (1, 1, 2, 3)]
    assert [request["messages"][0] for request in fake_openai.state.requests] == [
        {"role": "system", "content": text} for text in said
    ]
    assert _stored(store, _one_new_session(store, before)) == expected
    assert len(fake_openai.state.requests) == 3 + 1


def test_an_openai_conversations_session_is_the_one_session_of_its_turns(
    clients: Path, gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """Two turns of Runner.run(..., session=OpenAIConversationsSession()): the conversation is the one session
    made, holding each turn once, as get_items gives it back. Then, from the conversation's id, pop_item (the
    last answer) and add_items change it, and clear_session deletes it."""
    before = _sessions(store)
    fake_openai.state.text = ANSWER
    fake_openai.state.plans.extend([DROP_IN_WEATHER, Plan(tool_calls=[WEATHER])])
    result = _run(clients, gateway, "session")
    turns = [*_weather_turn(), ("user", FOLLOW_UP, []), ("assistant", ANSWER, [])]
    assert (result["outputs"], result["ran"]) == ([ANSWER, ANSWER], [RAN_WEATHER])
    assert _as_sent(result["conversation"]) == turns
    assert _as_sent(result["items"]) == turns
    session_id = _one_new_session(store, before)
    assert result["conversation_id"] == f"conv_{uuid.UUID(session_id).hex}"
    assert _stored(store, session_id) == turns
    assert len(fake_openai.state.requests) == 3 + 1  # two rounds and a drop, then one

    edited = _run(clients, gateway, "session-edit", result["conversation_id"])
    kept = [*turns[:-1], ("user", THANKS, [])]
    assert _as_sent(edited["popped"]) == [("assistant", ANSWER, [])]
    assert (_as_sent(edited["items"]), _as_sent(edited["last"])) == (kept, [("user", THANKS, [])])
    assert _sessions(store) - before == {session_id}
    assert _stored(store, session_id) == kept

    cleared = _run(clients, gateway, "session-clear", result["conversation_id"])
    assert cleared["cleared"] == 7  # items: the question, the text and the call, the output, and three messages
    assert _sessions(store) - before == set()
    assert store.get(f"/sessions/{session_id}").status_code == 404
    assert len(fake_openai.state.requests) == 3 + 1  # editing a conversation generates nothing


@pytest.mark.parametrize("scenario", ["previous-response-id", "auto-previous-response-id"])
def test_responses_chained_by_previous_response_id_stay_in_one_session(
    clients: Path, gateway: LocalService, store: httpx.Client, fake_openai: FastAPI, scenario: str
) -> None:
    """A second turn given the first's last_response_id, each turn with auto_previous_response_id=True or not
    (with it, each round after the first sends its new items only, chained to the round before)."""
    before = _sessions(store)
    fake_openai.state.text = ANSWER
    fake_openai.state.plans.extend([DROP_IN_WEATHER, Plan(tool_calls=[WEATHER])])
    result = _run(clients, gateway, scenario)
    expected = [*_weather_turn(), ("user", FOLLOW_UP, []), ("assistant", ANSWER, [])]
    assert (result["outputs"], result["ran"]) == ([ANSWER, ANSWER], [RAN_WEATHER])
    assert _as_sent(result["conversation"]) == expected
    session_id = _one_new_session(store, before)
    assert _stored(store, session_id) == expected
    assert all(response_id.startswith("resp_") for response_id in result["response_ids"])
    assert len(fake_openai.state.requests) == 3 + 1
    # The second turn's model is shown the whole conversation, its question last.
    shown = [(m["role"], m.get("content")) for m in fake_openai.state.requests[-1]["messages"][1:]]
    assert shown == [(role, content or None) for role, content, _ in expected[:-1]]
