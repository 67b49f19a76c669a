"""Tool calls through the gateway, as real clients make them: relayed whole, stored once, the same everywhere."""

import json
import signal
import uuid
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai.types.chat import ChatCompletionToolParam

from testing.chunks import tokens
from testing.processes import Service
from testing.upstream import TEXT, Plan
from tests.chat_gateway.conftest import LocalService, read_finished, sse_events, wait_for

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


def _sdk(gateway: LocalService) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def test_the_sdk_streams_parallel_calls_and_they_are_stored(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
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
    answer = read_finished(store, completion_id.removeprefix("chatcmpl-"))
    assert (answer["content"], answer["tool_calls"], answer["finish_reason"]) == (TEXT, _as_sent(1), "tool_calls")
    assert answer["options"]["tools"] == TOOLS  # a continuation asks with the same tools


def test_the_sdk_gets_calls_without_text_in_a_whole_completion(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
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


@pytest.mark.parametrize("delay", [0, 0.005], ids=["unpaced", "paced"])
@pytest.mark.parametrize(
    "drop_after",
    [len(tokens(TEXT)) + 3, len(tokens(TEXT)) + 12, len(tokens(TEXT)) + 10],
    ids=["in-the-first-call", "in-the-second-call", "between-calls"],
)
def test_a_drop_in_the_calls_relays_and_stores_only_the_calls_asked_again(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI, drop_after: int, delay: float
) -> None:
    """Half a call is never shown: the answer's text so far is kept, its calls are asked for again, and the
    client and the store get the second attempt's calls only (their ids tell the attempts apart)."""
    fake_openai.state.plans.extend(
        [Plan(tool_calls=CALLS, drop_after=drop_after, delay=delay), Plan(tool_calls=CALLS, delay=delay)]
    )
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
    answer = read_finished(store, start["message_id"])
    assert (answer["content"], answer["tool_calls"]) == (TEXT, _as_sent(2))
    continued = fake_openai.state.requests[1]
    assert continued["tools"] == TOOLS
    assert continued["messages"][-1] == {"role": "assistant", "content": TEXT}


def test_reattaching_gives_exactly_the_stored_calls_after_its_offset(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
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
    gateway: LocalService, fake_openai: FastAPI, tools: list[dict[str, Any]], problem: str
) -> None:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "tools": tools}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert problem in json.dumps(response.json())
    assert fake_openai.state.requests == []


def _run_tool(name: str, arguments: str) -> str:
    return {"get_weather": "18°C, sunny", "get_time": "14:05"}[name] + f" ({json.loads(arguments)})"


def _accumulate(stream: Any) -> tuple[str, str, list[dict[str, Any]], str]:
    """A streamed completion as the SDK's users gather it: text, finish reason, whole calls, completion id."""
    text, finish_reason, completion_id = "", "", ""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in stream:
        completion_id = chunk.id
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            got = calls.setdefault(
                call.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            got["id"] += call.id or ""
            if call.function is not None:
                got["function"]["name"] += call.function.name or ""
                got["function"]["arguments"] += call.function.arguments or ""
        finish_reason = chunk.choices[0].finish_reason or finish_reason
    return text, finish_reason, [calls[i] for i in sorted(calls)], completion_id


@pytest.mark.parametrize("named", [True, False], ids=["session-header", "no-header"])
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "whole"])
def test_an_sdk_agent_loop_is_stored_once_message_by_message(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI, stream: bool, named: bool
) -> None:
    """call → run the tools → send their results → the final answer; the client resends the whole
    conversation each round, and the session holds each message once: the one it names, or without a
    header the one that holds the conversation so far."""
    fake_openai.state.plans.extend([Plan(tool_calls=CALLS), Plan()])
    sdk, session_id = _sdk(gateway), f"weather-{uuid.uuid4()}"  # a name: the server makes its session's id
    messages: list[Any] = [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather and time in Lyon?"},
    ]

    def ask() -> tuple[str, str, list[dict[str, Any]], str]:
        nonlocal session_id
        kwargs: dict[str, Any] = {"model": "fake-model", "messages": messages, "tools": TOOLS}
        headers = {"X-Session-Id": session_id} if named else {}
        if stream:
            raw = sdk.chat.completions.with_raw_response.create(**kwargs, stream=True, extra_headers=headers)
            session_id = raw.headers["x-session-id"]
            return _accumulate(raw.parse())
        raw = sdk.chat.completions.with_raw_response.create(**kwargs, extra_headers=headers)
        session_id = raw.headers["x-session-id"]
        completion = raw.parse()
        message = completion.choices[0].message
        calls = [call.model_dump() for call in message.tool_calls or []]
        return message.content or "", completion.choices[0].finish_reason, calls, completion.id

    text, finish_reason, calls, _ = ask()
    assert (text, finish_reason, calls) == (TEXT, "tool_calls", _as_sent(1))
    messages.append({"role": "assistant", "content": text, "tool_calls": calls})
    results = [_run_tool(call["function"]["name"], call["function"]["arguments"]) for call in calls]
    messages += [
        {"role": "tool", "tool_call_id": call["id"], "content": result}
        for call, result in zip(calls, results, strict=True)
    ]
    text, finish_reason, calls, completion_id = ask()
    assert (text, finish_reason, calls) == (TEXT, "stop", [])
    # The model saw the calls and their results as the client sent them.
    assert fake_openai.state.requests[1]["messages"][2:] == [
        {"role": "assistant", "content": TEXT, "tool_calls": _as_sent(1)},
        *({"role": "tool", "tool_call_id": f"call_1_{i}", "content": results[i]} for i in range(2)),
    ]
    # Sent again (a client's retry of the round): the same answer, neither generated nor stored twice.
    assert ask()[3] == completion_id
    assert len(fake_openai.state.requests) == 2
    items = store.get(f"/sessions/{session_id}/messages").json()["items"]
    stored = [(m["role"], m["content"], m["tool_calls"], m["tool_call_id"], m["status"]) for m in items]
    # OpenAI's tool messages name no tool: each is stored with the one its call named.
    assert [m["name"] for m in items if m["role"] == "tool"] == ["get_weather", "get_time"]
    assert stored == [
        ("user", "Weather and time in Lyon?", None, None, "complete"),
        ("assistant", TEXT, _as_sent(1), None, "complete"),
        ("tool", results[0], None, "call_1_0", "complete"),
        ("tool", results[1], None, "call_1_1", "complete"),
        ("assistant", TEXT, None, None, "complete"),
    ]


def test_a_chat_round_with_tool_results_is_answered_from_the_stored_history(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.extend([Plan(tool_calls=CALLS[:1]), Plan()])
    first = httpx.post(
        f"{gateway.url}/chat",
        json={
            "parts": [
                {"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/sky.png"}},
            ],
            "options": {"tools": TOOLS},
        },
        timeout=30,
    ).json()
    [call] = first["tool_calls"]
    result = {"tool_call_id": call["id"], "content": "18°C", "name": "get_weather"}
    body = {"session_id": first["session_id"], "tool_results": [result], "options": {"tools": TOOLS}}
    second = httpx.post(f"{gateway.url}/chat", json=body, timeout=30)
    assert (second.status_code, second.json()["response"]) == (200, TEXT), second.text
    shown = fake_openai.state.requests[1]["messages"]
    assert shown[0]["content"][1] == {"type": "image_url", "image_url": {"url": "https://example.com/sky.png"}}
    assert shown[1:] == [
        {"role": "assistant", "content": TEXT, "tool_calls": [call]},
        {"role": "tool", "content": "18°C", "tool_call_id": call["id"]},
    ]
    assert fake_openai.state.requests[1]["tools"] == TOOLS
    roles = [m["role"] for m in store.get(f"/sessions/{first['session_id']}/messages").json()["items"]]
    assert roles == ["user", "assistant", "tool", "assistant"]
    without_session = httpx.post(f"{gateway.url}/chat", json={"tool_results": [result]}, timeout=30)
    assert without_session.status_code == 400
    assert "session_id" in without_session.json()["detail"]


@pytest.mark.slow  # kills a gateway process
def test_a_gateway_killed_in_the_middle_of_a_call_leaves_it_to_the_next_whole(
    gateway_process: Service, process_store: httpx.Client, fake_openai: FastAPI
) -> None:
    """SIGKILL while the upstream streams a call's arguments: nothing of the call was shown or stored; the
    gateway that recovers the answer asks for its calls again, and a client reattaching gets them whole."""
    fake_openai.state.plans.extend([Plan(tool_calls=CALLS, delay=0.05), Plan(tool_calls=CALLS)])
    body = {"message": "Weather and time?", "stream": True, "options": {"tools": TOOLS}}
    with httpx.stream("POST", f"{gateway_process.url}/chat", json=body, timeout=30) as response:
        events = sse_events(response)
        message_id = next(events).data["message_id"]
        seen = ""
        for event in events:
            assert event.event == "delta", event  # the calls are never reached before the kill
            seen += event.data["text"]
            if seen == TEXT:
                break
        wait_for(lambda: process_store.get(f"/messages/{message_id}").json()["content"] == TEXT)
        wait_for(lambda: len(fake_openai.state.requests) == 1 and fake_openai.state.open_streams == 1)
        gateway_process.kill(signal.SIGKILL)  # while the call's fragments are still coming
    stored = process_store.get(f"/messages/{message_id}").json()
    assert (stored["status"], stored["tool_calls"]) == ("in_progress", None)
    gateway_process.start()  # a new instance: it takes the orphan over once its lease expires
    answer = read_finished(process_store, message_id)
    assert (answer["status"], answer["content"], answer["tool_calls"]) == ("complete", TEXT, _as_sent(2))
    with httpx.stream(
        "GET", f"{gateway_process.url}/chat/messages/{message_id}/stream", params={"offset": len(TEXT)}, timeout=30
    ) as response:
        rest = [(e.event, e.data) for e in sse_events(response) if e.event in ("delta", "tool_call", "done")]
    assert [data for kind, data in rest if kind == "tool_call"] == _as_sent(2)
    assert rest[-1][0] == "done"


def test_more_calls_than_an_answer_holds_fail_it_saying_so(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(tool_calls=[("f", "{}")] * 130))
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "Call f 130 times"}], "tools": TOOLS}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 502, response.text
    assert "130 tool calls" in response.json()["error"]["message"]
    stored = store.get(f"/sessions/{response.headers['x-session-id']}/messages").json()["items"][-1]
    assert (stored["status"], stored["tool_calls"]) == ("failed", None)
    assert len(fake_openai.state.requests) == 1  # not retried: the model would make as many again


def test_a_round_resent_with_another_result_in_a_named_session_is_another_round(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.extend([Plan(tool_calls=CALLS[:1]), Plan(), Plan()])
    sdk, session = _sdk(gateway), {"X-Session-Id": f"weather-{uuid.uuid4()}"}
    messages: list[Any] = [{"role": "user", "content": "Weather?"}]
    raw = sdk.chat.completions.with_raw_response.create(
        model="fake-model", messages=messages, tools=TOOLS, extra_headers=session
    )
    session_id, first = raw.headers["x-session-id"], raw.parse()
    call = first.choices[0].message.tool_calls[0].model_dump()  # type: ignore[index]
    messages.append({"role": "assistant", "content": TEXT, "tool_calls": [call]})
    for result in ("sunny", "rainy"):  # the same call answered twice, differently: two rounds, two answers
        answered = [*messages, {"role": "tool", "tool_call_id": call["id"], "content": result}]
        sdk.chat.completions.create(model="fake-model", messages=answered, tools=TOOLS, extra_headers=session)
    items = store.get(f"/sessions/{session_id}/messages").json()["items"]
    assert [(m["role"], m["content"] if m["role"] == "tool" else "") for m in items] == [
        ("user", ""),
        ("assistant", ""),
        ("tool", "sunny"),
        ("assistant", ""),
        ("tool", "rainy"),
        ("assistant", ""),
    ]
