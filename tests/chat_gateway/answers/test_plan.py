import uuid

import pytest
from openai.types.chat import ChatCompletionMessageParam

from chat_gateway.answers.plan import ChatPlan
from chat_gateway.auth.identity import ANYONE, Caller, Role
from chat_gateway.chat.protocol import ChatRequest
from shared import Forbidden
from shared.identity import DEFAULT_USER, Limits

ALICE = Caller(Role.USER, "alice", Limits(), None, "key:alice")
ADMIN = Caller(Role.ADMIN, None, Limits(), None, "admin")


def test_a_new_chat_knows_its_prompt_before_any_history() -> None:
    plan = ChatPlan(ChatRequest(message="Hi", context={"page": "home"}))
    assert plan.new_session
    assert plan.known_prompt == [
        {"role": "system", "content": 'Context:\n{"page": "home"}'},
        {"role": "user", "content": "Hi"},
    ]


def test_a_chat_going_on_in_its_session_is_prompted_from_its_history() -> None:
    plan = ChatPlan(ChatRequest(message="Hi", session_id=uuid.uuid4()))
    assert not plan.new_session
    assert plan.known_prompt is None


def test_a_clients_own_prompt_is_the_prompt() -> None:
    own: list[ChatCompletionMessageParam] = [{"role": "user", "content": "earlier"}, {"role": "user", "content": "Hi"}]
    plan = ChatPlan(ChatRequest(message="Hi", session_id=uuid.uuid4()), prompt=own)
    assert plan.known_prompt == own


def test_whose_chat_it_is_and_what_it_reaches() -> None:
    assert (ChatPlan(ChatRequest(message="Hi")).owner, ChatPlan(ChatRequest(message="Hi")).scope) == (
        DEFAULT_USER,
        None,
    )
    mine = ChatPlan(ChatRequest(message="Hi"), ALICE)
    assert (mine.owner, mine.scope) == ("alice", "alice")
    for_bob = ChatPlan(ChatRequest(message="Hi", user_id="bob"), ADMIN)
    assert (for_bob.owner, for_bob.scope) == ("bob", "bob")
    assert ChatPlan(ChatRequest(message="Hi"), ADMIN).scope is None
    with pytest.raises(Forbidden):
        _ = ChatPlan(ChatRequest(message="Hi", user_id="bob"), ALICE).owner


def test_anyone_reaches_everyones_chats() -> None:
    assert ANYONE.scope() is None
    assert ALICE.scope() == "alice"
