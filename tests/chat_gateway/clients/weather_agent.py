"""An agent built on OpenAI's Agents SDK, unchanged but for the base URL: with its default model interface (the
Responses API), or with its Chat Completions model.

Run by tests/chat_gateway/test_real_clients.py with the clients' own virtualenv (`make clients`):
python weather_agent.py GATEWAY_URL responses|chat. Prints the run's final output and the tools it ran, as JSON.
"""

import json
import sys

from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

ran: list[str] = []


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


def main() -> None:
    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    client = AsyncOpenAI(base_url=f"{sys.argv[1]}/v1", api_key="unused", max_retries=0)
    set_default_openai_client(client, use_for_tracing=False)
    chat = len(sys.argv) > 2 and sys.argv[2] == "chat"
    agent = Agent(
        name="weather",
        instructions="Answer with the weather and the time.",
        tools=[get_weather, get_time],
        model=OpenAIChatCompletionsModel(model="fake-model", openai_client=client) if chat else "fake-model",
    )
    result = Runner.run_sync(agent, "Weather and time in Lyon?")
    print(json.dumps({"output": result.final_output, "ran": ran}))


if __name__ == "__main__":
    main()
