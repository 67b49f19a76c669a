"""Clients that speak Chat Completions, run as their users run them (installed by `make clients` in a
virtualenv of their own), unchanged but for the gateway's base URL.

The openai SDK runs in-process (the gateway's own dependency): as its users use it, with its default
``max_retries=2``, no Idempotency-Key and no session header, its requests and its retries (which resend the
same body) must each land in the one session that holds their conversation, every message stored once.
"""

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai import OpenAI

from testing.chunks import tokens
from testing.upstream import TEXT, Plan
from tests.chat_gateway.conftest import LocalService, read_finished

pytestmark = pytest.mark.slow  # starts processes: left out of `make test-fast`


@pytest.fixture(scope="module")
def persistence_app(persistence_app_on_both: LocalService) -> LocalService:
    """Every real client's test runs on both databases."""
    return persistence_app_on_both


def _sessions(store: httpx.Client) -> set[str]:
    ids: set[str] = set()
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = store.get("/sessions", params=params).json()
        ids |= {session["id"] for session in page["items"]}
        if not page.get("next_cursor"):
            return ids
        params["cursor"] = page["next_cursor"]


def _roles_and_calls(store: httpx.Client, session_id: str) -> list[tuple[str, list[str]]]:
    items = store.get(f"/sessions/{session_id}/messages").json()["items"]
    return [(m["role"], [call["function"]["name"] for call in m["tool_calls"] or []]) for m in items]


@pytest.fixture
def llm(clients: Path, gateway: LocalService, tmp_path: Path) -> list[str]:
    """The llm CLI, with the gateway as an OpenAI-compatible model named `gateway` (its documented way)."""
    models = f'- model_id: gateway\n  model_name: fake-model\n  api_base: "{gateway.url}/v1"\n  supports_tools: true\n'
    (tmp_path / "extra-openai-models.yaml").write_text(models)
    return [str(clients / "llm")]


def test_llm_follow_ups_land_in_one_session(
    llm: list[str], gateway: LocalService, store: httpx.Client, fake_openai: FastAPI, tmp_path: Path
) -> None:
    env = os.environ | {"LLM_USER_PATH": str(tmp_path), "OPENAI_API_KEY": "unused"}
    before = _sessions(store)
    for args in (["-m", "gateway", "Where is Lyon?"], ["-c", "And Paris?"], ["-c", "Which is bigger?"]):
        ran = subprocess.run([*llm, *args], capture_output=True, text=True, timeout=60, env=env, check=False)
        assert (ran.returncode, ran.stdout.strip()) == (0, TEXT), ran.stderr
    (session_id,) = _sessions(store) - before
    contents = [m["content"] for m in store.get(f"/sessions/{session_id}/messages").json()["items"]]
    assert contents == ["Where is Lyon?", TEXT, "And Paris?", TEXT, "Which is bigger?", TEXT]


# The openai SDK, in-process, as its users use it: default max_retries (2), no Idempotency-Key, no session header.

QUESTION = "What is the weather in Lyon?"
ARGUMENTS = '{"city": "Lyon Fourvière ☀️"}'  # spaced and not ASCII: as a client re-serializing them would not keep
RESULT = "18°C and sunny in Lyon Fourvière ☀️"
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,  # the SDK's stream helper parses only strict tools' arguments
}
CHAT_TOOLS: list[Any] = [{"type": "function", "function": WEATHER}]
RESPONSES_TOOLS: list[Any] = [{"type": "function", **WEATHER}]
RETRY_ATTEMPTS = 4  # the gateway's own upstream attempts per generation (RETRY_ATTEMPTS' default)
# A call's items arrive after the text's tokens: this drops the stream inside the call's arguments.
DROP_IN_ARGUMENTS = len(tokens(TEXT)) + 3

Stored = tuple[str, str, list[tuple[str, str, str]], str | None, str]


def _sdk(gateway: LocalService, **options: Any) -> OpenAI:
    """The SDK as its users make it: only the base URL and a key (any: the gateway is in open mode) given."""
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", **options)


def _stored(store: httpx.Client, session_id: str) -> list[Stored]:
    """A session's messages: role, content, calls (id, name, arguments), the call a result answers, status."""
    items = store.get(f"/sessions/{session_id}/messages", params={"limit": 200}).json()["items"]
    return [
        (
            m["role"],
            m["content"],
            [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in m["tool_calls"] or []],
            m["tool_call_id"],
            m["status"],
        )
        for m in items
    ]


def _one_new_session(store: httpx.Client, before: set[str]) -> str:
    new = _sessions(store) - before
    assert len(new) == 1, f"{len(new)} sessions: " + json.dumps({s: _stored(store, s) for s in new}, default=str)
    return new.pop()


def _asked(body: dict[str, Any]) -> list[tuple[str, str]]:
    """An upstream request's conversation: role and text of each message."""
    return [(m["role"], m.get("content") or "") for m in body["messages"]]


def _user(text: str) -> Stored:
    return ("user", text, [], None, "complete")


def _answer(text: str = TEXT, calls: list[tuple[str, str, str]] | None = None, status: str = "complete") -> Stored:
    return ("assistant", text, calls or [], None, status)


def _result(call_id: str, text: str = RESULT) -> Stored:
    return ("tool", text, [], call_id, "complete")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_openai_sdk_chat_completions_tools_loop_is_one_session(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI, stream: bool
) -> None:
    """The SDK's documented tools loop: question, call, result, answer, the client appending
    ``completion.choices[0].message`` to its messages (the streamed one from the stream helper's final
    completion). The call's stream drops inside its arguments, which the gateway retries by itself."""
    before = _sessions(store)
    fake_openai.state.plans.extend(
        [
            Plan(tool_calls=[("get_weather", ARGUMENTS)], drop_after=DROP_IN_ARGUMENTS),
            Plan(tool_calls=[("get_weather", ARGUMENTS)]),
        ]
    )
    client = _sdk(gateway)
    messages: list[Any] = [{"role": "user", "content": QUESTION}]

    def complete() -> Any:
        if not stream:
            return client.chat.completions.create(model="fake-model", messages=messages, tools=CHAT_TOOLS)
        with client.chat.completions.stream(model="fake-model", messages=messages, tools=CHAT_TOOLS) as events:
            for _ in events:
                pass
            return events.get_final_completion()

    first = complete()
    message = first.choices[0].message
    assert (first.choices[0].finish_reason, message.content) == ("tool_calls", TEXT)
    (call,) = message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", ARGUMENTS)
    messages.append(message)
    messages.append({"role": "tool", "tool_call_id": call.id, "content": RESULT})
    second = complete()
    assert (second.choices[0].finish_reason, second.choices[0].message.content) == ("stop", TEXT)
    session_id = _one_new_session(store, before)
    assert _stored(store, session_id) == [
        _user(QUESTION),
        _answer(TEXT, [(call.id, "get_weather", ARGUMENTS)]),
        _result(call.id),
        _answer(),
    ]
    # The dropped attempt, the call asked again, the answer to the result.
    assert len(fake_openai.state.requests) == 3
    assert fake_openai.state.requests[-1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": call.id,
        "content": RESULT,
    }


def _session_of_response(store: httpx.Client, response_id: str) -> str:
    return str(store.get(f"/messages/{uuid.UUID(hex=response_id.removeprefix('resp_'))}").json()["session_id"])


def test_openai_sdk_responses_chain_with_previous_response_id_is_one_session(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    before = _sessions(store)
    client = _sdk(gateway)
    previous = None
    asked = ["Where is Lyon?", "And Paris?", "Which is bigger?"]
    for question in asked:
        options: dict[str, Any] = {"previous_response_id": previous} if previous else {}
        response = client.responses.create(model="fake-model", input=question, **options)
        assert (response.status, response.output_text) == ("completed", TEXT)
        previous = response.id
    assert previous is not None
    session_id = _one_new_session(store, before)
    assert _session_of_response(store, previous) == session_id
    assert _stored(store, session_id) == [stored for q in asked for stored in (_user(q), _answer())]
    assert len(fake_openai.state.requests) == 3
    last = [("user", asked[0]), ("assistant", TEXT), ("user", asked[1]), ("assistant", TEXT), ("user", asked[2])]
    assert _asked(fake_openai.state.requests[-1]) == last


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_openai_sdk_responses_tool_round_with_previous_response_id_is_one_session(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI, stream: bool
) -> None:
    """A call, its ``function_call_output`` sent with ``previous_response_id``, the answer, and a follow-up."""
    before = _sessions(store)
    fake_openai.state.plans.extend(
        [
            Plan(tool_calls=[("get_weather", ARGUMENTS)], drop_after=DROP_IN_ARGUMENTS),
            Plan(tool_calls=[("get_weather", ARGUMENTS)]),
        ]
    )
    client = _sdk(gateway)

    def respond(**request: Any) -> Any:
        if not stream:
            return client.responses.create(model="fake-model", tools=RESPONSES_TOOLS, **request)
        with client.responses.stream(model="fake-model", tools=RESPONSES_TOOLS, **request) as events:
            for _ in events:
                pass
            return events.get_final_response()

    first = respond(input=QUESTION)
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", ARGUMENTS)]
    call_id = calls[0].call_id
    output = [{"type": "function_call_output", "call_id": call_id, "output": RESULT}]
    second = respond(input=output, previous_response_id=first.id)
    assert (second.status, second.output_text) == ("completed", TEXT)
    third = respond(input="And tomorrow?", previous_response_id=second.id)
    assert (third.status, third.output_text) == ("completed", TEXT)
    session_id = _one_new_session(store, before)
    assert _stored(store, session_id) == [
        _user(QUESTION),
        _answer(TEXT, [(call_id, "get_weather", ARGUMENTS)]),
        _result(call_id),
        _answer(),
        _user("And tomorrow?"),
        _answer(),
    ]
    assert len(fake_openai.state.requests) == 4  # the dropped attempt and the call again, the answer, the follow-up


def test_openai_sdk_background_stream_dropped_and_resumed_from_its_sequence_number(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """``background=True, stream=True``: the client drops the stream after a few deltas, then resumes it with
    ``responses.retrieve(id, stream=True, starting_after=N)``; its deltas make exactly the stored text."""
    before = _sessions(store)
    fake_openai.state.plans.append(Plan(delay=0.05))  # still generating when the client drops its stream
    client = _sdk(gateway)
    deltas: list[str] = []
    response_id, last = None, -1
    with client.responses.create(model="fake-model", input=QUESTION, background=True, stream=True) as events:
        for event in events:
            if event.type == "response.created":
                response_id = event.response.id
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            last = event.sequence_number
            if len(deltas) == 5:
                break  # the client goes away: the stream is closed, the answer goes on
    assert response_id is not None
    assert client.responses.retrieve(response_id).status in ("queued", "in_progress")
    numbers = []
    with client.responses.retrieve(response_id, stream=True, starting_after=last) as events:
        for event in events:
            numbers.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            if event.type == "response.completed":
                assert event.response.output_text == TEXT
    assert numbers[0] > last  # numbered by where each delta ends in the text: not one by one
    assert numbers == sorted(numbers)
    assert "".join(deltas) == TEXT
    final = client.responses.retrieve(response_id)
    assert (final.status, final.output_text) == ("completed", TEXT)
    session_id = _one_new_session(store, before)
    assert _stored(store, session_id) == [_user(QUESTION), _answer()]
    assert len(fake_openai.state.requests) == 1


def test_openai_sdk_conversation_holds_each_item_once(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    before = _sessions(store)
    client = _sdk(gateway)
    conversation = client.conversations.create()
    for question in ("Where is Lyon?", "And Paris?"):
        response = client.responses.create(model="fake-model", conversation=conversation.id, input=question)
        assert (response.status, response.output_text) == ("completed", TEXT)
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    listed = [
        (item.type, getattr(item, "role", None), "".join(getattr(part, "text", "") for part in item.content or []))
        if item.type == "message"
        else (item.type, None, "")
        for item in items
    ]
    assert listed == [
        ("message", "user", "Where is Lyon?"),
        ("message", "assistant", TEXT),
        ("message", "user", "And Paris?"),
        ("message", "assistant", TEXT),
    ]
    assert len({item.id for item in items}) == 4
    session_id = str(uuid.UUID(hex=conversation.id.removeprefix("conv_")))
    assert _sessions(store) - before == {session_id}
    assert len(fake_openai.state.requests) == 2
    assert _asked(fake_openai.state.requests[-1]) == [
        ("user", "Where is Lyon?"),
        ("assistant", TEXT),
        ("user", "And Paris?"),
    ]


# The SDK's retries: it resends the same body, with no Idempotency-Key, on a 5xx, a 408/409/429 or a timeout.


def test_openai_sdk_retries_of_a_failing_upstream_store_one_failed_answer(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """The upstream fails every time: the gateway's answer fails (a 502), which the SDK retries twice. The
    question is asked once: one session, holding it and one failed answer, and the SDK raises."""
    question = f"{QUESTION} ({uuid.uuid4().hex[:8]})"  # its own: failed answers of others' stay retryable
    before = _sessions(store)
    fake_openai.state.default_plan = Plan(status=500)
    try:
        with pytest.raises(openai.InternalServerError):
            _sdk(gateway).chat.completions.create(model="fake-model", messages=[{"role": "user", "content": question}])
    finally:
        fake_openai.state.default_plan = Plan()
    session_id = _one_new_session(store, before)
    stored = _stored(store, session_id)
    assert stored == [_user(question), ("assistant", "", [], None, "failed")]
    # One generation (RETRY_ATTEMPTS upstream attempts), or one per request if a retry runs it again in place.
    requests = fake_openai.state.requests
    assert len(requests) in (RETRY_ATTEMPTS, 2 * RETRY_ATTEMPTS, 3 * RETRY_ATTEMPTS)
    assert all(_asked(body) == [("user", question)] for body in requests)


def test_openai_sdk_timeout_retries_attach_to_the_answer_generated_once(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """``timeout=2`` on an answer that takes 3.6 s: the SDK gives up waiting and resends the request (twice).
    The answer is generated once; the client gets it on a retry, or times out, never a second generation."""
    question = f"{QUESTION} ({uuid.uuid4().hex[:8]})"  # its own: failed answers of others' stay retryable
    before = _sessions(store)
    fake_openai.state.plans.append(Plan(delay=3.6 / len(tokens(TEXT))))
    client = _sdk(gateway, timeout=2)
    try:
        completion = client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": question}]
        )
    except openai.APITimeoutError:
        pass
    else:
        assert completion.choices[0].message.content == TEXT
    session_id = _one_new_session(store, before)
    last = store.get(f"/sessions/{session_id}/messages/last").json()
    read_finished(store, last["id"])
    time.sleep(1)  # a second generation, if one was started, shows meanwhile
    assert _sessions(store) - before == {session_id}
    assert _stored(store, session_id) == [_user(question), _answer()]
    assert len(fake_openai.state.requests) == 1


def test_openai_sdk_failed_answer_resent_by_its_client_goes_on_in_its_session(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """[q1 → a1], then q2 whose answer fails (every upstream attempt a 500, the SDK's retries too), then the
    client resends [q1, a1, q2] and gets its answer: one session, q1, a1, q2 and the answer to q2 (the failed
    answer retried in place), not a new session without the first exchange."""
    question = f"{QUESTION} ({uuid.uuid4().hex[:8]})"  # its own: failed answers of others' stay retryable
    before = _sessions(store)
    client = _sdk(gateway)
    messages: list[Any] = [{"role": "user", "content": question}]
    first = client.chat.completions.create(model="fake-model", messages=messages)
    messages.append(first.choices[0].message)
    messages.append({"role": "user", "content": "And Paris?"})
    fake_openai.state.default_plan = Plan(status=500)
    try:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="fake-model", messages=messages)
    finally:
        fake_openai.state.default_plan = Plan()
    failed = len(fake_openai.state.requests) - 1
    again = client.chat.completions.create(model="fake-model", messages=messages)
    assert again.choices[0].message.content == TEXT
    session_id = _one_new_session(store, before)
    assert _stored(store, session_id) == [_user(question), _answer(), _user("And Paris?"), _answer()]
    requests = fake_openai.state.requests
    assert failed in (RETRY_ATTEMPTS, 2 * RETRY_ATTEMPTS, 3 * RETRY_ATTEMPTS)
    assert len(requests) == 1 + failed + 1  # a1, the failed attempts, the answer to q2
    conversation = [("user", question), ("assistant", TEXT), ("user", "And Paris?")]
    assert all(_asked(body) == conversation for body in requests[1:])


def test_openai_sdk_user_field_does_not_merge_two_conversations(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """OpenAI's ``user`` names the client's end user, not a conversation: two conversations sent with the same
    ``user`` are two sessions, each holding its own."""
    before = _sessions(store)
    client = _sdk(gateway)
    asked = {"lyon": ["Where is Lyon?", "And Paris?"], "food": ["How do I cook quenelles?", "And sausages?"]}
    conversations: dict[str, list[Any]] = {name: [] for name in asked}
    for turn in range(2):  # interleaved, as two of the end user's chats are
        for name, messages in conversations.items():
            messages.append({"role": "user", "content": asked[name][turn]})
            answer = client.chat.completions.create(model="fake-model", messages=messages, user="end-user-42")
            assert answer.choices[0].message.content == TEXT
            messages.append(answer.choices[0].message)
    new = _sessions(store) - before
    stored = sorted(_stored(store, session_id) for session_id in new)
    expected = sorted([[stored for q in questions for stored in (_user(q), _answer())] for questions in asked.values()])
    assert stored == expected, json.dumps(stored)
    assert len(fake_openai.state.requests) == 4


FUNCTIONS = '''
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"18°C and sunny in {city}"
'''


@pytest.mark.parametrize("arguments", [ARGUMENTS, '{"city":"Lyon"}'], ids=["spaced-non-ascii", "compact"])
def test_llm_functions_and_follow_ups_land_in_one_session(
    llm: list[str], gateway: LocalService, store: httpx.Client, fake_openai: FastAPI, tmp_path: Path, arguments: str
) -> None:
    """`llm --functions`: the model calls the function, llm runs it and sends its result, then `-c` follow-ups
    (the function still given). llm replays the call's arguments as it re-serializes them (json.dumps: ASCII
    escapes, ", " and ": "), not as they were sent: the conversation is still the one session."""
    env = os.environ | {"LLM_USER_PATH": str(tmp_path), "OPENAI_API_KEY": "unused"}
    before = _sessions(store)
    fake_openai.state.plans.append(Plan(tool_calls=[("get_weather", arguments)]))
    city = json.loads(arguments)["city"]
    for args in (["-m", "gateway", QUESTION], ["-c", "And tomorrow?"], ["-c", "Which is warmer?"]):
        command = [*llm, *args, "--functions", FUNCTIONS]
        ran = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip().endswith(TEXT), ran.stdout
    session_id = _one_new_session(store, before)
    call = ("call_1_0", "get_weather", arguments)
    assert _stored(store, session_id) == [
        _user(QUESTION),
        _answer(TEXT, [call]),
        _result("call_1_0", f"18°C and sunny in {city}"),
        _answer(),
        _user("And tomorrow?"),
        _answer(),
        _user("Which is warmer?"),
        _answer(),
    ]
    assert len(fake_openai.state.requests) == 4
