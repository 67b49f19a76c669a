"""Tool calls through the gateway, as real clients make them: relayed whole, stored once, the same everywhere."""

import json
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai.types.chat import ChatCompletionToolParam

from tests.chat_gateway.conftest import Service, sse_events, wait_for
from tests.fake_openai import TEXT, Plan, tokens

pytestmark = pytest.mark.slow  # starts processes: left out of `make test-fast`

CALLS = [("get_weather", '{"city": "Lyon", "unit": "celsius"}'), ("get_time", '{"tz": "Europe/Paris"}')]
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} of a place",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": True},
        },
    }
    for name, _ in CALLS
]


def _as_sent(attempt: int) -> list[dict[str, Any]]:
    """The calls as the fake upstream's ``attempt``-th request (1-based) makes them."""
    return [
        {"id": f"call_{attempt}_{index}", "type": "function", "function": {"name": name, "arguments": arguments}}
        for index, (name, arguments) in enumerate(CALLS)
    ]


def _stored_answer(store: httpx.Client, message_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = wait_for(
        lambda: (m := store.get(f"/messages/{message_id}").json())["status"] in ("complete", "failed") and m
    )
    return answer


def _sdk(gateway: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def test_the_sdk_streams_parallel_calls_and_they_are_stored(
    gateway: Service, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(tool_calls=CALLS))
    stream = _sdk(gateway).chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "Weather and time in Lyon?"}],
        tools=TOOLS,
        tool_choice="auto",
        parallel_tool_calls=True,
        stream=True,
    )
    text, finish_reason, completion_id = "", None, None
    calls: dict[int, dict[str, str]] = {}
    for chunk in stream:
        completion_id = chunk.id
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            got = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
            got["id"] += call.id or ""
            got["name"] += (call.function.name or "") if call.function else ""
            got["arguments"] += (call.function.arguments or "") if call.function else ""
        finish_reason = chunk.choices[0].finish_reason or finish_reason
    assert (text, finish_reason) == (TEXT, "tool_calls")
    relayed = [calls[i] for i in sorted(calls)]
    assert relayed == [
        {"id": call["id"], "name": call["function"]["name"], "arguments": call["function"]["arguments"]}
        for call in _as_sent(1)
    ]
    sent = fake_openai.state.requests[0]
    assert (sent["tools"], sent["tool_choice"], sent["parallel_tool_calls"]) == (TOOLS, "auto", True)
    assert completion_id is not None
    answer = _stored_answer(store, completion_id.removeprefix("chatcmpl-"))
    assert (answer["content"], answer["tool_calls"], answer["finish_reason"]) == (TEXT, _as_sent(1), "tool_calls")
    assert answer["options"]["tools"] == TOOLS  # a continuation asks with the same tools


def test_the_sdk_gets_calls_without_text_in_a_whole_completion(
    gateway: Service, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.text = ""
    fake_openai.state.plans.append(Plan(tool_calls=CALLS[:1]))
    completion = _sdk(gateway).chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "Weather in Lyon?"}],
        tools=TOOLS,
    )
    choice = completion.choices[0]
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", None)
    assert choice.message.tool_calls is not None
    assert [call.model_dump() for call in choice.message.tool_calls] == _as_sent(1)[:1]


@pytest.mark.parametrize(
    "drop_after",
    [len(tokens(TEXT)) + 3, len(tokens(TEXT)) + 12, len(tokens(TEXT)) + 10],
    ids=["in-the-first-call", "in-the-second-call", "between-calls"],
)
def test_a_drop_in_the_calls_relays_and_stores_only_the_calls_asked_again(
    gateway: Service, store: httpx.Client, fake_openai: FastAPI, drop_after: int
) -> None:
    """Half a call is never shown: the answer's text so far is kept, its calls are asked for again, and the
    client and the store get the second attempt's calls only (their ids tell the attempts apart)."""
    fake_openai.state.plans.extend([Plan(tool_calls=CALLS, drop_after=drop_after), Plan(tool_calls=CALLS)])
    body = {"message": "Weather and time?", "stream": True, "options": {"tools": TOOLS}}
    with httpx.stream("POST", f"{gateway.url}/chat", json=body, timeout=30) as response:
        events = list(sse_events(response))
    start = events[0].data
    text = "".join(e.data["text"] for e in events if e.event == "delta")
    relayed = [e.data for e in events if e.event == "tool_call"]
    assert (text, relayed, events[-1].event) == (TEXT, _as_sent(2), "done")
    # The calls' ids are the offsets after the text, one each: a client reattaching knows which it has.
    assert [e.id for e in events if e.event == "tool_call"] == [str(len(TEXT) + 1), str(len(TEXT) + 2)]
    assert events[-1].id == str(len(TEXT) + 2)
    answer = _stored_answer(store, start["message_id"])
    assert (answer["content"], answer["tool_calls"]) == (TEXT, _as_sent(2))
    continued = fake_openai.state.requests[1]
    assert continued["tools"] == TOOLS
    assert continued["messages"][-1] == {"role": "assistant", "content": TEXT}


def test_reattaching_gives_exactly_the_stored_calls_after_its_offset(
    gateway: Service, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(tool_calls=CALLS))
    chat = httpx.post(f"{gateway.url}/chat", json={"message": "Weather?", "options": {"tools": TOOLS}}, timeout=30)
    assert chat.status_code == 200, chat.text
    reply = chat.json()
    assert (reply["response"], reply["tool_calls"]) == (TEXT, _as_sent(1))
    url = f"{gateway.url}/chat/messages/{reply['message_id']}/stream"

    def replay(offset: int) -> list[tuple[str, Any]]:
        with httpx.stream("GET", url, params={"offset": offset}, timeout=30) as response:
            return [(e.event, e.data) for e in sse_events(response) if e.event in ("delta", "tool_call", "done")]

    whole = replay(0)
    assert [kind for kind, _ in whole] == ["delta", "tool_call", "tool_call", "done"]
    assert [data for kind, data in whole if kind == "tool_call"] == _as_sent(1)
    assert [kind for kind, _ in replay(len(TEXT))] == ["tool_call", "tool_call", "done"]
    after_one = replay(len(TEXT) + 1)
    assert after_one[0] == ("tool_call", _as_sent(1)[1])
    assert [kind for kind, _ in replay(len(TEXT) + 2)] == ["done"]
    past = httpx.get(url, params={"offset": len(TEXT) + 3}, timeout=30)
    assert past.status_code == 409


@pytest.mark.parametrize(
    ("tools", "problem"),
    [
        ([{"type": "web_search"}], "function"),
        ([{"type": "function", "function": {"description": "no name"}}], "name"),
    ],
)
def test_tools_the_gateway_cannot_relay_are_a_400(
    gateway: Service, fake_openai: FastAPI, tools: list[dict[str, Any]], problem: str
) -> None:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "tools": tools}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert problem in json.dumps(response.json())
    assert fake_openai.state.requests == []
