"""One conversation, one session, without a header (chat_gateway/openai_api/session_matching.py), as OpenAI clients that
resend the whole conversation each time (the `llm` CLI with -c, chat UIs, plain SDK loops) use the gateway."""

from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI

from testing.upstream import TEXT, Plan
from tests.chat_gateway.conftest import LocalService


class Client:
    """An OpenAI client that keeps its conversation and sends all of it with each message."""

    def __init__(self, gateway: LocalService, messages: list[dict[str, Any]] | None = None) -> None:
        self.sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        self.messages = messages or [{"role": "system", "content": "Be brief."}]

    def ask(self, question: str) -> str:
        """Ask, keep the answer; returns the session the gateway stored it in."""
        self.messages.append({"role": "user", "content": question})
        create = self.sdk.chat.completions.with_raw_response.create
        raw = create(model="fake-model", messages=self.messages)  # type: ignore[arg-type]
        answer = raw.parse().choices[0].message
        self.messages.append({"role": "assistant", "content": answer.content, "refusal": answer.refusal})
        return raw.headers["x-session-id"]


def _stored(store: httpx.Client, session_id: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in store.get(f"/sessions/{session_id}/messages").json()["items"]]


def test_follow_ups_without_a_header_go_on_in_one_session(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    client = Client(gateway)
    sessions = {client.ask("Where is Lyon?"), client.ask("And Paris?"), client.ask("Which is bigger?")}
    assert len(sessions) == 1
    (session_id,) = sessions
    assert _stored(store, session_id) == [
        ("user", "Where is Lyon?"),
        ("assistant", TEXT),
        ("user", "And Paris?"),
        ("assistant", TEXT),
        ("user", "Which is bigger?"),
        ("assistant", TEXT),
    ]
    assert len(fake_openai.state.requests) == 3


def test_an_edited_history_or_a_branch_starts_a_session_of_its_own(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    client = Client(gateway)
    first = client.ask("Where is Lyon?")
    assert client.ask("And Paris?") == first
    # A branch: back to the first answer, another question. The first conversation stays as it was.
    branch = Client(gateway, client.messages[:3])
    branched = branch.ask("And Marseille?")
    assert branched != first
    assert [content for _, content in _stored(store, first)] == ["Where is Lyon?", TEXT, "And Paris?", TEXT]
    assert _stored(store, branched) == [("user", "And Marseille?"), ("assistant", TEXT)]
    # The branch goes on in its own session from then on.
    assert branch.ask("And Nice?") == branched
    # An edited history (a question changed) matches nothing.
    edited = Client(gateway, [client.messages[0], {"role": "user", "content": "Where is Lyon, France?"}])
    edited.messages += client.messages[2:]
    assert edited.ask("And Lille?") not in (first, branched)
    # Another system prompt (an agent's instructions that change per round) is no branch: it goes on.
    instructed = Client(gateway, [{"role": "system", "content": "Be verbose."}, *client.messages[1:]])
    assert instructed.ask("And Lille?") == first


def test_a_named_session_wins_over_the_conversation(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    client = Client(gateway)
    first = client.ask("Where is Lyon?")
    messages = [*client.messages, {"role": "user", "content": "And Paris?"}]
    theirs = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "fake-model", "messages": messages, "metadata": {"session_id": "their-own"}},
        timeout=30,
    )
    assert theirs.status_code == 200, theirs.text
    assert theirs.headers["x-session-id"] != first
    assert client.ask("And Paris?") == first


def test_a_round_with_an_extra_result_is_not_the_round_stored(
    gateway: LocalService, store: httpx.Client, fake_openai: FastAPI
) -> None:
    """A resent round whose results are not exactly those stored after the answer starts its own session."""
    calls = [("get_weather", '{"city": "Lyon"}')]
    fake_openai.state.plans.extend([Plan(tool_calls=calls), Plan(), Plan()])
    client = Client(gateway, [{"role": "user", "content": "Weather?"}])
    sdk = client.sdk
    tools: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    asked: list[Any] = list(client.messages)
    raw = sdk.chat.completions.with_raw_response.create(model="fake-model", messages=asked, tools=tools)
    session = raw.headers["x-session-id"]
    call = raw.parse().choices[0].message.tool_calls[0].model_dump()  # type: ignore[index]
    asked.append({"role": "assistant", "content": TEXT, "tool_calls": [call]})
    result: Any = {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
    again = sdk.chat.completions.with_raw_response.create(model="fake-model", messages=[*asked, result], tools=tools)
    assert again.headers["x-session-id"] == session
    extra: Any = {"role": "tool", "tool_call_id": "other", "content": "x"}
    other = sdk.chat.completions.with_raw_response.create(
        model="fake-model", messages=[*asked, result, extra], tools=tools
    )
    assert other.headers["x-session-id"] != session
    assert [m["role"] for m in store.get(f"/sessions/{session}/messages").json()["items"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
    ]


def test_a_conversations_items_are_retrieved_and_deleted_one_by_one(
    gateway: LocalService, fake_openai: FastAPI
) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    conversation = sdk.conversations.create(items=[{"type": "message", "role": "user", "content": "Where is Lyon?"}])
    sdk.responses.create(model="fake-model", input="And Paris?", conversation=conversation.id)
    items: list[Any] = sdk.conversations.items.list(conversation.id, order="asc").data
    assert [item.type for item in items] == ["message", "message", "message"]
    got = sdk.conversations.items.retrieve(items[0].id, conversation_id=conversation.id)
    assert got.model_dump() == items[0].model_dump()
    left = sdk.conversations.items.delete(items[-1].id, conversation_id=conversation.id)
    assert (left.id, left.object) == (conversation.id, "conversation")
    assert [item.id for item in sdk.conversations.items.list(conversation.id, order="asc").data] == [
        item.id for item in items[:-1]
    ]
    with pytest.raises(openai.NotFoundError):
        sdk.conversations.items.retrieve(items[-1].id, conversation_id=conversation.id)
    other = sdk.conversations.create()
    with pytest.raises(openai.NotFoundError):  # an item of another conversation
        sdk.conversations.items.retrieve(items[0].id, conversation_id=other.id)
