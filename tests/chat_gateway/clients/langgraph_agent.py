"""A LangGraph agent (LangGraph's prebuilt ReAct agent on LangChain's ChatOpenAI), unchanged but for the base URL:
ChatOpenAI's defaults (not streamed, its SDK's default retries).

Run by tests/chat_gateway/openai_api/test_agent_frameworks.py with the clients' own virtualenv (`make clients`):
python langgraph_agent.py GATEWAY_URL QUESTION. Prints the run's final answer and the tools it ran, as JSON.
"""

import json
import sys

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.prebuilt import create_react_agent

ran: list[str] = []


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    ran.append(f"get_weather({city})")
    return f"18°C and sunny in {city}"


@tool
def get_time(tz: str) -> str:
    """The time in a time zone."""
    ran.append(f"get_time({tz})")
    return "14:05"


def main() -> None:
    model = ChatOpenAI(model="fake-model", base_url=f"{sys.argv[1]}/v1", api_key="unused")
    agent = create_react_agent(model, [get_weather, get_time], prompt="Answer with the weather and the time.")
    result = agent.invoke({"messages": [("user", sys.argv[2])]})
    print(json.dumps({"output": result["messages"][-1].content, "ran": ran}))


if __name__ == "__main__":
    main()
