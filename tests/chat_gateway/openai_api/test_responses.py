"""The Responses API through the gateway, with the official SDK unchanged but for its base URL."""

import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from shared import MessageStatus
from testing.processes import Service
from testing.upstream import TEXT, Plan
from tests.chat_gateway.conftest import LocalService, gateway_env, local_gateway, wait_for

WEATHER: Any = [
    {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}, "strict": None}
]


def _sdk(gateway: LocalService | Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def _answer_id(response_id: str) -> str:
    hex_id = response_id.removeprefix("resp_")
    return f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"


def _stored_session(store: httpx.Client, response_id: str) -> list[tuple[str, str]]:
    answer = store.get(f"/messages/{_answer_id(response_id)}").json()
    items = store.get(f"/sessions/{answer['session_id']}/messages").json()["items"]
    return [(m["role"], m["content"]) for m in items]


def test_a_response_is_created_whole_and_stored(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    response = _sdk(gateway).responses.create(model="fake-model", input="Where is Lyon?", instructions="Be brief.")
    assert (response.status, response.output_text, response.instructions) == ("completed", TEXT, "Be brief.")
    assert response.usage is not None
    assert response.usage.output_tokens > 0
    assert fake_openai.state.requests[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is Lyon?"},
    ]
    assert _stored_session(store, response.id) == [("user", "Where is Lyon?"), ("assistant", TEXT)]
    again = _sdk(gateway).responses.retrieve(response.id)
    assert (again.id, again.output_text, again.status) == (response.id, TEXT, "completed")


def test_a_streamed_response_numbers_its_events_from_what_is_stored(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.005))
    sdk = _sdk(gateway)
    events = list(sdk.responses.create(model="fake-model", input="Where is Lyon?", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(set(numbers))
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    assert "".join(event.delta for event in deltas) == TEXT
    assert numbers[-1] == len(TEXT) + 7
    response_id = events[0].response.id  # type: ignore[union-attr]
    # Resumed after any event, through the same or any gateway: exactly the rest, numbered the same. After a
    # number no event had (10: inside the second word), from the event before it.
    for after in (0, 3, 10, len(TEXT) + 3, len(TEXT) + 5):
        given = max(n for n in numbers if n <= after)
        rest = list(sdk.responses.retrieve(response_id, stream=True, starting_after=after))
        assert [event.sequence_number for event in rest] == [n for n in numbers if n > given]
        text = "".join(event.delta for event in rest if event.type == "response.output_text.delta")
        assert text == TEXT[min(max(0, given - 3), len(TEXT)) :]


def test_a_background_response_outlives_its_request_and_is_polled(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.append(Plan(delay=0.02))
    sdk = _sdk(gateway)
    started = sdk.responses.create(model="fake-model", input="Where is Lyon?", background=True)
    assert (started.status, started.background) == ("in_progress", True)
    done = wait_for(lambda: (r := sdk.responses.retrieve(started.id)).status == "completed" and r)
    assert done.output_text == TEXT
    # Resumed from the middle long after it ended: no expiry.
    rest = list(sdk.responses.retrieve(started.id, stream=True, starting_after=13))
    assert "".join(e.delta for e in rest if e.type == "response.output_text.delta") == TEXT[10:]


@pytest.mark.parametrize("delay", [0.1, 0.0], ids=["paced", "unpaced"])
def test_a_background_response_is_cancelled_once(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI, delay: float
) -> None:
    """Cancelled once its first words are stored: it ends cancelled, with them; unpaced, it may have ended first,
    and then is what it was. Either way the reply and the stored answer agree (the races it was seen to lose:
    tests/chat_gateway/answers/test_generation.py, test_recovery.py)."""
    fake_openai.state.plans.append(Plan(delay=delay))
    sdk = _sdk(gateway)
    asked = f"Where is Lyon? (cancelled, {delay})"  # a failed answer's request sent again is its retry: not another's
    started = sdk.responses.create(model="fake-model", input=asked, background=True)
    wait_for(lambda: store.get(f"/messages/{_answer_id(started.id)}").json()["content"])
    cancelled = sdk.responses.cancel(started.id)
    stored = store.get(f"/messages/{_answer_id(started.id)}").json()
    assert cancelled.output_text == stored["content"]
    if delay or cancelled.status == "cancelled":
        assert cancelled.status == "cancelled"
        assert (stored["status"], stored["error"]) == ("failed", "cancelled")
        assert stored["content"]
        assert TEXT.startswith(stored["content"])
    else:
        assert (cancelled.status, stored["status"], stored["content"]) == ("completed", "complete", TEXT)
    assert sdk.responses.cancel(started.id).status == cancelled.status
    whole = sdk.responses.create(model="fake-model", input="Hi")
    with pytest.raises(openai.BadRequestError):
        sdk.responses.cancel(whole.id)


def test_a_cancel_that_reaches_its_answer_once_it_completed_elsewhere_returns_it_completed(
    gateway: LocalService,
    tmp_path: Path,
    persistence_app: LocalService,
    fake_openai: FastAPI,
    fake_openai_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Generated by one gateway, cancelled through another, which reads it in progress; it completes before the
    cancel reaches it (replayed: that cancel waits for the end). It is returned as it ended, not as a 409."""
    fake_openai.state.plans.append(Plan(delay=0.05))
    with local_gateway(tmp_path, persistence_app, fake_openai_url) as other:
        answers = other.app.state.answers
        cancel = answers.cancel
        read: list[MessageStatus] = []

        async def once_it_ended(message_id: uuid.UUID, scope: str | None = None) -> Any:
            read.append((await answers.persistence.messages.get(message_id)).status)
            await answers.outcome(message_id)  # the other gateway's end, followed through persistence
            return await cancel(message_id, scope)

        monkeypatch.setattr(answers, "cancel", once_it_ended)
        asked = "Where is Lyon? (ends first)"
        started = _sdk(gateway).responses.create(model="fake-model", input=asked, background=True)
        ended = _sdk(other).responses.cancel(started.id)
    assert read == [MessageStatus.IN_PROGRESS]  # the cancel read it in progress
    assert (ended.status, ended.output_text) == ("completed", TEXT)


def test_previous_response_id_chains_and_function_calls_round_trip(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    fake_openai.state.plans.extend([Plan(tool_calls=[("get_weather", '{"city": "Lyon"}')]), Plan()])
    sdk = _sdk(gateway)
    first = sdk.responses.create(model="fake-model", input="Weather in Lyon?", tools=WEATHER)
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(call.name, call.arguments) for call in calls] == [("get_weather", '{"city": "Lyon"}')]
    call_id = calls[0].call_id
    output: Any = [{"type": "function_call_output", "call_id": call_id, "output": "18°C"}]
    second = sdk.responses.create(model="fake-model", input=output, previous_response_id=first.id, tools=WEATHER)
    assert (second.output_text, second.previous_response_id) == (TEXT, first.id)
    shown = fake_openai.state.requests[1]["messages"]
    assert shown[0] == {"role": "user", "content": "Weather in Lyon?"}
    assert shown[1]["tool_calls"][0]["id"] == call_id
    assert shown[2] == {"role": "tool", "tool_call_id": call_id, "content": "18°C"}
    roles = [role for role, _ in _stored_session(store, second.id)]
    assert roles == ["user", "assistant", "tool", "assistant"]


def test_bad_requests_are_400s_and_unknown_responses_404s(gateway: LocalService, fake_openai: FastAPI) -> None:
    sdk = _sdk(gateway)
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="fake-model", input="Hi", background=True, store=False)
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="fake-model", input="Hi", tools=[{"type": "web_search"}])
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve("resp_0123")
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve("resp_" + "0" * 32)
    assert fake_openai.state.requests == []


def test_a_response_not_stored_is_gone_once_it_ends(gateway: LocalService, store: httpx.Client) -> None:
    sdk = _sdk(gateway)
    response = sdk.responses.create(model="fake-model", input="Hi", store=False)
    assert response.output_text == TEXT
    wait_for(lambda: store.get(f"/messages/{_answer_id(response.id)}").status_code == 404)
    deleted = _sdk(gateway).responses.create(model="fake-model", input="Hi")
    sdk.responses.delete(deleted.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(deleted.id)


def test_a_responses_input_items_are_its_own_input_a_page_at_a_time(
    gateway: LocalService, fake_openai: FastAPI
) -> None:
    sdk = _sdk(gateway)
    first = sdk.responses.create(model="fake-model", input="Where is Lyon?", instructions="Be brief.")
    asked: Any = [
        {"role": "user", "content": "And Paris?"},
        {"role": "user", "content": [{"type": "input_text", "text": "And "}, {"type": "input_text", "text": "Nice?"}]},
    ]
    second = sdk.responses.create(model="fake-model", input=asked, previous_response_id=first.id)
    items = list(sdk.responses.input_items.list(second.id, order="asc"))
    assert [(item.type, item.content[0].text) for item in items] == [  # type: ignore[union-attr,index]
        ("message", "And Paris?"),
        ("message", "And Nice?"),
    ]
    page = sdk.responses.input_items.list(second.id, limit=1)
    assert (len(page.data), page.has_more) == (1, True)
    assert [item.content[0].text for item in sdk.responses.input_items.list(first.id)] == ["Where is Lyon?"]  # type: ignore[union-attr,index]


def test_a_streamed_response_not_stored_is_gone_once_streamed_and_leaves_its_conversation_alone(
    gateway: LocalService, store: httpx.Client
) -> None:
    sdk = _sdk(gateway)
    kept = sdk.responses.create(model="fake-model", input="Where is Lyon?")
    events = list(
        sdk.responses.create(
            model="fake-model", input="And Paris?", previous_response_id=kept.id, stream=True, store=False
        )
    )
    assert events[-1].type == "response.completed"
    gone = events[0].response.id  # type: ignore[union-attr]
    assert store.get(f"/messages/{_answer_id(gone)}").status_code == 404
    assert _stored_session(store, kept.id) == [("user", "Where is Lyon?"), ("assistant", TEXT)]


def test_a_conversation_is_a_session_that_responses_go_on_in(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    sdk = _sdk(gateway)
    first: Any = [{"type": "message", "role": "user", "content": "Where is Lyon?"}]
    conversation = sdk.conversations.create(items=first, metadata={"topic": "travel"})
    assert (conversation.object, conversation.metadata) == ("conversation", {"topic": "travel"})
    sdk.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "assistant", "content": "In France."}]
    )
    response = sdk.responses.create(model="fake-model", input="And Paris?", conversation=conversation.id)
    assert response.output_text == TEXT
    # The model was shown the conversation so far; the session holds it all, in order.
    assert fake_openai.state.requests[0]["messages"] == [
        {"role": "user", "content": "Where is Lyon?"},
        {"role": "assistant", "content": "In France."},
        {"role": "user", "content": "And Paris?"},
    ]
    session = uuid.UUID(hex=conversation.id.removeprefix("conv_"))
    listed = store.get(f"/sessions/{session}/messages").json()["items"]
    assert [(m["role"], m["content"]) for m in listed] == [
        ("user", "Where is Lyon?"),
        ("assistant", "In France."),
        ("user", "And Paris?"),
        ("assistant", TEXT),
    ]
    items = list(sdk.conversations.items.list(conversation.id, order="asc"))
    assert [(item.type, item.role) for item in items] == [  # type: ignore[union-attr]
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
        ("message", "assistant"),
    ]
    assert sdk.conversations.update(conversation.id, metadata={"topic": "cities"}).metadata == {"topic": "cities"}
    assert sdk.conversations.retrieve(conversation.id).id == conversation.id
    assert sdk.conversations.delete(conversation.id).deleted
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.retrieve(conversation.id)


@pytest.mark.slow  # kills a gateway process
def test_a_response_outlives_its_gateway_and_is_resumed_through_another(
    tmp_path: Path,
    gateway_process: Service,
    persistence: Service,
    process_store: httpx.Client,
    fake_openai: FastAPI,
    fake_openai_url: str,
) -> None:
    """Streamed from one gateway, which is SIGKILLed in the middle; the answer is taken over by another,
    through which the client resumes after the last event it saw: the events go on with no gap or repeat."""
    fake_openai.state.plans.extend([Plan(delay=0.05), Plan(delay=0.01)])
    seen: list[Any] = []
    with _sdk(gateway_process).responses.create(
        model="fake-model", input="Where is Lyon?", stream=True, background=True
    ) as events:
        for event in events:
            seen.append(event)
            if event.type == "response.output_text.delta" and len(seen) > 8:
                break
    wait_for(lambda: process_store.get(f"/messages/{_answer_id(seen[0].response.id)}").json()["content"])
    gateway_process.kill(signal.SIGKILL)
    other = Service.uvicorn(
        "chat_gateway.main:create_app", gateway_env(tmp_path, persistence.url, fake_openai_url), tmp_path / "other.log"
    ).start()
    try:
        rest = list(
            _sdk(other).responses.retrieve(seen[0].response.id, stream=True, starting_after=seen[-1].sequence_number)
        )
    finally:
        other.kill(signal.SIGTERM)
    numbers = [event.sequence_number for event in [*seen, *rest]]
    assert numbers == sorted(set(numbers))
    text = "".join(event.delta for event in [*seen, *rest] if event.type == "response.output_text.delta")
    assert (text, rest[-1].type) == (TEXT, "response.completed")
    answer = process_store.get(f"/messages/{_answer_id(seen[0].response.id)}").json()
    assert (answer["content"], answer["attempts"]) == (TEXT, 2)


def test_an_upstream_drop_is_continued_inside_a_response(gateway: LocalService, fake_openai: FastAPI) -> None:
    fake_openai.state.plans.append(Plan(drop_after=7))
    events = list(_sdk(gateway).responses.create(model="fake-model", input="Where is Lyon?", stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TEXT
    assert events[-1].response.output_text == TEXT  # type: ignore[union-attr]
    assert len(fake_openai.state.requests) == 2


@pytest.mark.parametrize(
    "fields",
    [
        {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},  # no call_id
        {"input": [{"type": "function_call_output", "output": "x"}]},  # no call_id
        {"input": [{"type": "message", "role": "robot", "content": "hi"}]},
        {"input": [{"type": "message", "role": "user", "content": [{"type": "input_audio"}]}]},
        {"input": "hi", "tool_choice": 5},
    ],
)
def test_items_a_chat_model_cannot_be_given_are_400s(gateway: LocalService, fake_openai: FastAPI, fields: dict) -> None:
    response = httpx.post(f"{gateway.url}/v1/responses", json={"model": "fake-model", **fields}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fake_openai.state.requests == []


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"reasoning": {"effort": "enormous"}}, "body.reasoning.effort: Input should be"),
        ({"text": {"format": {"type": "json_schema", "name": "city"}}}, "body.text.format.json_schema.schema: Field"),
        ({"tool_choice": {"type": "file_search"}}, "only function tools are served here"),
    ],
)
def test_requests_openai_refuses_or_this_gateway_does_not_serve_are_400s_that_say_why(
    gateway: LocalService, fake_openai: FastAPI, fields: dict, said: str
) -> None:
    body = {"model": "fake-model", "input": "hi", **fields}
    response = httpx.post(f"{gateway.url}/v1/responses", json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], said in error["message"]) == ("invalid_request_error", True), error
    assert fake_openai.state.requests == []


def test_conversation_items_that_cannot_be_stored_are_400s(gateway: LocalService) -> None:
    sdk = _sdk(gateway)
    conversation = sdk.conversations.create()
    for item in ({"type": "function_call_output", "output": "x"}, {"type": "item_reference", "id": "x"}):
        response = httpx.post(
            f"{gateway.url}/v1/conversations/{conversation.id}/items", json={"items": [item]}, timeout=30
        )
        assert response.status_code == 400, response.text
    assert list(sdk.conversations.items.list(conversation.id)) == []


def test_previous_response_id_of_a_response_still_in_progress_is_a_409(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """The model would be shown its partial text, and the session then hold the whole: refused until it ends."""
    fake_openai.state.plans.append(Plan(delay=0.02))
    sdk = _sdk(gateway)
    first = sdk.responses.create(model="fake-model", input="Where is Lyon? (still going)", background=True)
    wait_for(lambda: store.get(f"/messages/{_answer_id(first.id)}").json()["content"])
    with pytest.raises(openai.ConflictError, match="still in progress"):
        sdk.responses.create(model="fake-model", input="And Paris?", previous_response_id=first.id)
    wait_for(lambda: sdk.responses.retrieve(first.id).status == "completed")
    then = sdk.responses.create(model="fake-model", input="And Paris?", previous_response_id=first.id)
    assert then.status == "completed"
    assert _stored_session(store, then.id) == [
        ("user", "Where is Lyon? (still going)"),
        ("assistant", TEXT),
        ("user", "And Paris?"),
        ("assistant", TEXT),
    ]


def test_resuming_after_a_number_no_event_had_rounds_down_to_the_event_before(gateway: LocalService) -> None:
    """Deltas are numbered by where their text ends: a number between two of them resumes after the first,
    so no number is given twice with two texts."""
    sdk = _sdk(gateway)
    response = sdk.responses.create(model="fake-model", input="Where is Lyon? (resumed between deltas)")
    deltas = {
        event.sequence_number: event.delta
        for event in sdk.responses.retrieve(response.id, stream=True)
        if event.type == "response.output_text.delta"
    }
    numbers = sorted(deltas)
    between = numbers[2] + 2  # a number inside the next delta, never given
    assert between < numbers[3]
    resumed = [
        event
        for event in sdk.responses.retrieve(response.id, stream=True, starting_after=between)
        if event.type == "response.output_text.delta"
    ]
    assert (resumed[0].sequence_number, resumed[0].delta) == (numbers[3], deltas[numbers[3]])
    assert "".join(deltas[n] for n in numbers[:3]) + "".join(e.delta for e in resumed) == TEXT


def test_reasoning_effort_top_logprobs_and_user_go_upstream(gateway: LocalService, fake_openai: FastAPI) -> None:
    events = list(
        _sdk(gateway).responses.create(
            model="fake-model",
            input="Where is Lyon? (with logprobs)",
            reasoning={"effort": "low"},
            top_logprobs=2,
            user="end-user-7",
            stream=True,
        )
    )
    sent = fake_openai.state.requests[0]
    assert (sent["reasoning_effort"], sent["logprobs"], sent["top_logprobs"], sent["user"]) == (
        "low",
        True,
        2,
        "end-user-7",
    )
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    assert "".join(event.delta for event in deltas) == TEXT
    # Relayed live: each token's with the delta its text is in, or the next one.
    assert "".join(logprob.token for event in deltas for logprob in event.logprobs) == TEXT
    final = getattr(events[-1], "response")  # noqa: B009 - the last event is the response's end
    assert (final.reasoning.effort if final.reasoning else None, final.top_logprobs, final.user) == (
        "low",
        2,
        "end-user-7",
    )


def test_an_item_reference_is_the_item_it_names(gateway: LocalService, fake_openai: FastAPI) -> None:
    sdk = _sdk(gateway)
    first = sdk.responses.create(model="fake-model", input="Where is Lyon? (referenced)")
    [question] = sdk.responses.input_items.list(first.id).data
    answer = first.output[0]
    referenced: Any = [
        {"type": "item_reference", "id": question.id},
        {"type": "item_reference", "id": answer.id},
        {"role": "user", "content": "And Paris?"},
    ]
    sdk.responses.create(model="fake-model", input=referenced)
    assert fake_openai.state.requests[-1]["messages"] == [
        {"role": "user", "content": "Where is Lyon? (referenced)"},
        {"role": "assistant", "content": TEXT},
        {"role": "user", "content": "And Paris?"},
    ]
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="fake-model", input=[{"type": "item_reference", "id": "msg_" + "0" * 32}])


def test_input_tokens_are_counted_and_compaction_is_refused_as_unsupported(gateway: LocalService) -> None:
    sdk = _sdk(gateway)
    counted = sdk.responses.input_tokens.count(model="fake-model", input="Where is Lyon?", instructions="Be brief.")
    assert counted.object == "response.input_tokens"
    assert 5 < counted.input_tokens < 40  # an estimate: four characters a token
    first = sdk.responses.create(model="fake-model", input="Where is Lyon? (counted)")
    longer = sdk.responses.input_tokens.count(model="fake-model", input="And Paris?", previous_response_id=first.id)
    assert longer.input_tokens > len(TEXT) // 4
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.compact(model="fake-model", previous_response_id=first.id)
    assert refused.value.code == "unsupported"


def test_a_response_in_a_conversation_sent_again_is_the_first_one(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """An SDK's retry of a request naming a conversation finds its turn stored there already: it is that
    response, not a second question."""
    fake_openai.state.plans.append(Plan(delay=0.02))
    sdk = _sdk(gateway)
    conversation = sdk.conversations.create()
    asked: Any = {"model": "fake-model", "input": "Where is Lyon? (sent again)", "conversation": conversation.id}
    first = sdk.responses.create(**asked, background=True)
    wait_for(lambda: store.get(f"/messages/{_answer_id(first.id)}").json()["content"])
    again = sdk.responses.create(**asked, background=True)
    assert again.id == first.id
    wait_for(lambda: sdk.responses.retrieve(first.id).status == "completed")
    assert _stored_session(store, first.id) == [("user", "Where is Lyon? (sent again)"), ("assistant", TEXT)]
    assert len(fake_openai.state.requests) == 1
