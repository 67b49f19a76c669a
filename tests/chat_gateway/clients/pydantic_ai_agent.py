"""A pydantic-ai agent, unchanged but for the base URL: with its OpenAI Chat Completions model, or with its
Responses model, each on an OpenAIProvider (the SDK's default retries).

Run by tests/chat_gateway/openai_api/test_agent_frameworks.py with the clients' own virtualenv (`make clients`):
python pydantic_ai_agent.py GATEWAY_URL chat|responses QUESTION. Prints the run's final answer and the tools it ran,
as JSON.
"""

import json
import sys

from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

ran: list[str] = []


def get_weather(city: str) -> str:
    """The weather in a city."""
    ran.append(f"get_weather({city})")
    return f"18°C and sunny in {city}"


def get_time(tz: str) -> str:
    """The time in a time zone."""
    ran.append(f"get_time({tz})")
    return "14:05"


def main() -> None:
    provider = OpenAIProvider(base_url=f"{sys.argv[1]}/v1", api_key="unused")
    model_class = OpenAIResponsesModel if sys.argv[2] == "responses" else OpenAIChatModel
    agent = Agent(
        model_class("fake-model", provider=provider),
        instructions="Answer with the weather and the time.",
        tools=[get_weather, get_time],
    )
    result = agent.run_sync(sys.argv[3])
    print(json.dumps({"output": result.output, "ran": ran}))


if __name__ == "__main__":
    main()
