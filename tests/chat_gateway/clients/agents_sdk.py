"""OpenAI's Agents SDK as its users use it, unchanged but for the base URL (no API key, tracing off, the SDK's and
the OpenAI client's default retries): tool rounds, a handoff, dynamic instructions, an OpenAIConversationsSession
and Responses chaining by previous_response_id.

Run by tests/chat_gateway/openai_api/test_agents_sdk.py with the clients' own virtualenv (`make clients`):
python agents_sdk.py GATEWAY_URL SCENARIO [ARGUMENT]. The scenarios:

- ``tools``, ``handoff``, ``dynamic``, each ``-responses`` (the SDK's default model) or ``-chat``
  (OpenAIChatCompletionsModel), ``tools-...`` also ``-streamed`` (Runner.run_streamed);
- ``session``: two turns in an OpenAIConversationsSession, then its get_items; ``session-edit CONVERSATION_ID``:
  that conversation's pop_item, add_items and get_items; ``session-clear CONVERSATION_ID``: its clear_session;
- ``previous-response-id`` (a second turn given the first's last_response_id) and ``auto-previous-response-id``
  (both turns with auto_previous_response_id=True).

Prints, as JSON on its last line: the final outputs, the tools run, and the conversation as the client has it
(``[role, text, [call names]]`` per chat message: what it sent and what it was answered, instructions aside).
"""

import asyncio
import json
import sys
from itertools import count
from typing import Any

from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIConversationsSession,
    RunContextWrapper,
    Runner,
    RunResult,
    RunResultStreaming,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

ran: list[str] = []
client: AsyncOpenAI


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    ran.append(f"get_weather({city})")
    return f"18°C and sunny in {city}"


@function_tool
def get_time(tz: str) -> str:
    """The time in a time zone."""
    ran.append(f"get_time({tz})")
    return "14:05"


def model(interface: str) -> Any:
    return OpenAIChatCompletionsModel(model="fake-model", openai_client=client) if interface == "chat" else "fake-model"


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or [])


def as_messages(items: list[Any]) -> list[list[Any]]:
    """Responses items as chat messages: [role, text, [call names]], an answer's calls with its text."""
    messages: list[list[Any]] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append([item["role"], text_of(item.get("content")), []])
        elif kind == "function_call":
            if not messages or messages[-1][0] != "assistant":
                messages.append(["assistant", "", []])
            messages[-1][2].append(item["name"])
        elif kind == "function_call_output":
            messages.append(["tool", text_of(item.get("output")), []])
    return messages


def turn(question: str, result: RunResult | RunResultStreaming) -> list[list[Any]]:
    """One turn as the client has it: its question, and what the run made of it."""
    return as_messages([{"role": "user", "content": question}, *(item.to_input_item() for item in result.new_items)])


async def tools(interface: str, streamed: bool) -> dict[str, Any]:
    agent = Agent(
        name="weather",
        instructions="Answer with the weather and the time.",
        tools=[get_weather, get_time],
        model=model(interface),
    )
    question = "Quel temps fait-il à Lyon Fourvière ☀️ ?"
    result: RunResult | RunResultStreaming
    if streamed:
        result = Runner.run_streamed(agent, question)
        events = [event.type async for event in result.stream_events()]
        assert "raw_response_event" in events, events
    else:
        result = await Runner.run(agent, question)
    return {"outputs": [result.final_output], "conversation": turn(question, result)}


async def handoff(interface: str) -> dict[str, Any]:
    specialist = Agent(
        name="specialist",
        instructions="You are the weather specialist: look the weather up.",
        handoff_description="Knows the weather.",
        tools=[get_weather],
        model=model(interface),
    )
    triage = Agent(
        name="triage",
        instructions="Hand weather questions to the specialist.",
        handoffs=[specialist],
        model=model(interface),
    )
    question = "Quel temps fait-il à Lyon Fourvière ☀️ ?"
    result = await Runner.run(triage, question)
    return {"outputs": [result.final_output], "agent": result.last_agent.name, "conversation": turn(question, result)}


async def dynamic(interface: str) -> dict[str, Any]:
    rounds = count(1)
    seen: list[str] = []

    def instructions(context: RunContextWrapper[Any], agent: Agent[Any]) -> str:
        said = f"Round {next(rounds)} for {agent.name}: answer with the weather and the time."
        seen.append(said)
        return said

    agent = Agent(name="weather", instructions=instructions, tools=[get_weather, get_time], model=model(interface))
    question = "Quel temps fait-il à Lyon Fourvière ☀️ ?"
    result = await Runner.run(agent, question)
    return {"outputs": [result.final_output], "instructions": seen, "conversation": turn(question, result)}


async def session() -> dict[str, Any]:
    agent = Agent(name="weather", instructions="Answer with the weather.", tools=[get_weather], model="fake-model")
    conversation = OpenAIConversationsSession()
    questions = ["Quel temps fait-il à Lyon Fourvière ☀️ ?", "Et demain, à Fourvière ?"]
    outputs, messages = [], []
    for question in questions:
        result = await Runner.run(agent, question, session=conversation)
        outputs.append(result.final_output)
        messages += turn(question, result)
    items = await conversation.get_items()
    return {
        "outputs": outputs,
        "conversation": messages,
        "conversation_id": conversation.session_id,
        "items": as_messages(items),
    }


async def session_edit(conversation_id: str) -> dict[str, Any]:
    conversation = OpenAIConversationsSession(conversation_id=conversation_id)
    popped = await conversation.pop_item()
    await conversation.add_items([{"role": "user", "content": "Merci, à bientôt ☀️"}])
    return {
        "popped": as_messages([popped]) if popped else None,
        "items": as_messages(await conversation.get_items()),
        "last": as_messages(await conversation.get_items(limit=1)),
    }


async def session_clear(conversation_id: str) -> dict[str, Any]:
    conversation = OpenAIConversationsSession(conversation_id=conversation_id)
    before = await conversation.get_items()
    await conversation.clear_session()
    return {"cleared": len(before)}


async def chained(auto: bool) -> dict[str, Any]:
    agent = Agent(name="weather", instructions="Answer with the weather.", tools=[get_weather], model="fake-model")
    questions = ["Quel temps fait-il à Lyon Fourvière ☀️ ?", "Et demain, à Fourvière ?"]
    first = await Runner.run(agent, questions[0], auto_previous_response_id=auto)
    second = await Runner.run(
        agent, questions[1], previous_response_id=first.last_response_id, auto_previous_response_id=auto
    )
    return {
        "outputs": [first.final_output, second.final_output],
        "response_ids": [first.last_response_id, second.last_response_id],
        "conversation": turn(questions[0], first) + turn(questions[1], second),
    }


async def main() -> None:
    global client
    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    client = AsyncOpenAI(base_url=f"{sys.argv[1]}/v1", api_key="unused")
    set_default_openai_client(client, use_for_tracing=False)
    scenario = sys.argv[2]
    kind, _, variant = scenario.partition("-")
    result: dict[str, Any]
    if kind == "tools":
        result = await tools(variant.split("-")[0], variant.endswith("-streamed"))
    elif kind == "handoff":
        result = await handoff(variant)
    elif kind == "dynamic":
        result = await dynamic(variant)
    elif scenario == "session":
        result = await session()
    elif scenario == "session-edit":
        result = await session_edit(sys.argv[3])
    elif scenario == "session-clear":
        result = await session_clear(sys.argv[3])
    elif scenario in ("previous-response-id", "auto-previous-response-id"):
        result = await chained(scenario.startswith("auto"))
    else:
        raise SystemExit(f"no scenario {scenario!r}")
    print(json.dumps(result | {"ran": ran}, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())
