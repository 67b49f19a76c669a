import json
import uuid

import httpx
import pytest
import respx

from chat_gateway.clients.persistence import PersistenceClient, PersistenceError
from shared import Conflict, MessageStatus, NotFound, ServiceUnavailable
from shared.contract import AnswerFinish, AnswerPart, MessageUpdate, TurnCreate, TurnInput
from shared.identity import ON_BEHALF_OF
from tests.chat_gateway.conftest import stored_message

BASE = "http://persistence.test"
MESSAGE_ID = uuid.uuid4()

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client():
    async with httpx.AsyncClient(base_url=BASE) as http:
        yield PersistenceClient(http, attempts=3, initial_wait=0, max_wait=0)


COMPLETE = AnswerFinish(status=MessageStatus.COMPLETE)


def _appended(length: int) -> dict[str, object]:
    return {"id": str(MESSAGE_ID), "length": length, "version": 2, "status": "in_progress", "lease_expires_at": None}


def _message(**fields):
    return stored_message(id=MESSAGE_ID, status="pending").model_dump(mode="json") | fields


@respx.mock
async def test_retries_5xx_and_connection_errors_then_succeeds(client: PersistenceClient) -> None:
    route = respx.get(f"{BASE}/messages/{MESSAGE_ID}").mock(
        side_effect=[httpx.ConnectError("down"), httpx.Response(503), httpx.Response(200, json=_message())]
    )
    message = await client.messages.get(MESSAGE_ID)
    assert message.id == MESSAGE_ID
    assert route.call_count == 3


@respx.mock
async def test_a_429_from_persistence_is_waited_out(client: PersistenceClient) -> None:
    route = respx.get(f"{BASE}/messages/{MESSAGE_ID}").mock(
        side_effect=[
            httpx.Response(429, json={"detail": "slow down", "code": "rate_limited"}),
            httpx.Response(200, json=_message()),
        ]
    )
    assert (await client.messages.get(MESSAGE_ID)).id == MESSAGE_ID
    assert route.call_count == 2


@respx.mock
async def test_gives_up_with_503_after_bounded_attempts(client: PersistenceClient) -> None:
    route = respx.get(f"{BASE}/messages/{MESSAGE_ID}").mock(return_value=httpx.Response(500))
    with pytest.raises(ServiceUnavailable):
        await client.messages.get(MESSAGE_ID)
    assert route.call_count == 3


@respx.mock
async def test_4xx_is_not_retried_and_keeps_its_meaning(client: PersistenceClient) -> None:
    route = respx.post(f"{BASE}/messages/{MESSAGE_ID}/claim").mock(
        return_value=httpx.Response(409, json={"detail": "held", "code": "lease_held", "lease_owner": "g2"})
    )
    with pytest.raises(Conflict) as info:
        await client.messages.claim(MESSAGE_ID, "g1", 10)
    assert (info.value.code, info.value.extra["lease_owner"]) == ("lease_held", "g2")
    assert route.call_count == 1
    respx.get(f"{BASE}/messages/{MESSAGE_ID}").mock(return_value=httpx.Response(404, json={"detail": "gone"}))
    with pytest.raises(NotFound):
        await client.messages.get(MESSAGE_ID)
    respx.patch(f"{BASE}/messages/{MESSAGE_ID}").mock(return_value=httpx.Response(422, json={"detail": "bad"}))
    with pytest.raises(PersistenceError) as refused:
        await client.messages.update(MESSAGE_ID, MessageUpdate(error="nope"))
    assert refused.value.status_code == 422  # a value to fix, relayed as such: not a 502


@respx.mock
async def test_a_refusal_that_is_not_about_the_values_is_a_bad_gateway(client: PersistenceClient) -> None:
    respx.get(f"{BASE}/messages/{MESSAGE_ID}").mock(return_value=httpx.Response(401, json={"detail": "bad key"}))
    with pytest.raises(PersistenceError) as refused:
        await client.messages.get(MESSAGE_ID)
    assert (refused.value.status_code, refused.value.code) == (502, "persistence_error")


@respx.mock
async def test_append_whose_answer_was_lost_is_recognised(client: PersistenceClient) -> None:
    """The first try was stored but its answer lost; the retry's 409 shows our text is already there."""
    route = respx.post(f"{BASE}/messages/{MESSAGE_ID}/append").mock(
        side_effect=[
            httpx.ReadError("connection reset"),
            httpx.Response(409, json={"detail": "mismatch", "code": "offset_mismatch", "length": 15}),
        ]
    )
    assert await client.messages.append(MESSAGE_ID, 10, "hello", owner="g1", lease_seconds=5) == 15
    assert route.call_count == 2
    assert route.calls[0].request.content == route.calls[1].request.content


@respx.mock
async def test_append_at_a_truly_wrong_offset_is_a_conflict(client: PersistenceClient) -> None:
    respx.post(f"{BASE}/messages/{MESSAGE_ID}/append").mock(
        return_value=httpx.Response(409, json={"detail": "mismatch", "code": "offset_mismatch", "length": 99})
    )
    with pytest.raises(Conflict):
        await client.messages.append(MESSAGE_ID, 10, "hello", owner="g1", lease_seconds=5)


@respx.mock
async def test_every_request_carries_what_the_api_needs(client: PersistenceClient) -> None:
    route = respx.get(f"{BASE}/sessions/{MESSAGE_ID}/messages").mock(
        return_value=httpx.Response(200, json={"items": [_message(status="complete")], "next_cursor": "abc"})
    )
    items, cursor = await client.messages.history_page(MESSAGE_ID, None)
    assert (len(items), cursor) == (1, "abc")
    params = route.calls[0].request.url.params
    assert (params["order"], params["status"]) == ("desc", "complete")


@respx.mock
async def test_a_turn_says_whether_it_is_new(client: PersistenceClient) -> None:
    session_id = uuid.uuid4()
    turn = {"inputs": [_message(role="user", status="complete")], "answer": _message(status="in_progress")}
    route = respx.post(f"{BASE}/sessions/{session_id}/turns").mock(
        side_effect=[httpx.Response(201, json=turn), httpx.Response(200, json=turn)]
    )
    answer, created = await client.messages.start_turn(session_id, TurnCreate(inputs=[TurnInput(content="hi")]))
    assert (answer.id, answer.status, created) == (MESSAGE_ID, "in_progress", True)
    assert (await client.messages.start_turn(session_id, TurnCreate(inputs=[TurnInput(content="hi")])))[1] is False
    assert route.call_count == 2


@respx.mock
@pytest.mark.parametrize(
    ("finish", "conflict"),
    [
        ("complete", {"detail": "complete", "code": "conflict", "status": "complete", "length": 15}),
        ("failed", {"detail": "lease", "code": "lease_lost", "status": "failed", "length": 15}),
    ],
)
async def test_a_finishing_append_whose_answer_was_lost_is_recognised(
    client: PersistenceClient, finish: MessageStatus, conflict: dict[str, object]
) -> None:
    route = respx.post(f"{BASE}/messages/{MESSAGE_ID}/append").mock(
        side_effect=[httpx.ReadError("connection reset"), httpx.Response(409, json=conflict)]
    )
    assert (
        await client.messages.append(
            MESSAGE_ID, 10, "hello", owner="g1", lease_seconds=5, finish=AnswerFinish(status=finish)
        )
        == 15
    )
    assert route.call_count == 2


@respx.mock
async def test_a_finishing_append_on_an_answer_ended_otherwise_is_a_conflict(client: PersistenceClient) -> None:
    conflict = {"detail": "lease", "code": "lease_lost", "status": "failed", "length": 15}
    respx.post(f"{BASE}/messages/{MESSAGE_ID}/append").mock(return_value=httpx.Response(409, json=conflict))
    with pytest.raises(Conflict):  # cancelled by someone else: ours was "complete"
        await client.messages.append(
            MESSAGE_ID, 10, "hello", owner="g1", lease_seconds=5, finish=AnswerFinish(status=MessageStatus.COMPLETE)
        )


@respx.mock
async def test_an_append_renews_the_lease_and_a_finishing_one_sends_none(client: PersistenceClient) -> None:
    route = respx.post(f"{BASE}/messages/{MESSAGE_ID}/append").mock(
        side_effect=[httpx.Response(200, json=_appended(15)), httpx.Response(200, json=_appended(20))]
    )
    await client.messages.append(MESSAGE_ID, 10, "hello", owner="g1", lease_seconds=5)
    await client.messages.append(
        MESSAGE_ID, 15, "world", owner="g1", lease_seconds=5, finish=AnswerFinish(status=MessageStatus.COMPLETE)
    )
    renewing, finishing = (json.loads(call.request.content) for call in route.calls)
    assert renewing == {"offset": 10, "text": "hello", "owner": "g1", "lease_seconds": 5}
    assert finishing == {"offset": 15, "text": "world", "owner": "g1", "finish": {"status": "complete"}}


@respx.mock
async def test_a_request_made_for_a_user_names_them_and_a_list_is_validated_item_by_item(
    client: PersistenceClient,
) -> None:
    route = respx.get(f"{BASE}/messages/{MESSAGE_ID}").mock(return_value=httpx.Response(200, json=_message()))
    await client.messages.get(MESSAGE_ID, "team/zoë")
    assert route.calls[0].request.headers[ON_BEHALF_OF] == "team%2Fzo%C3%AB"
    respx.get(f"{BASE}/messages/stale").mock(return_value=httpx.Response(200, json=[_message(), _message()]))
    assert [message.id for message in await client.messages.stale("g1")] == [MESSAGE_ID, MESSAGE_ID]


@respx.mock
async def test_an_append_names_its_model_and_a_finish_its_parts(client: PersistenceClient) -> None:
    route = respx.post(f"{BASE}/messages/{MESSAGE_ID}/append").mock(
        side_effect=[httpx.Response(200, json=_appended(15)), httpx.Response(200, json=_appended(20))]
    )
    await client.messages.append(MESSAGE_ID, 10, "hello", owner="g1", lease_seconds=5, model="b")
    parts = [AnswerPart(model="a", offset=0), AnswerPart(model="b", offset=10, usage={"total_tokens": 3})]
    finish = AnswerFinish(status=MessageStatus.COMPLETE, parts=parts)
    await client.messages.append(MESSAGE_ID, 15, "world", owner="g1", lease_seconds=5, finish=finish)
    beginning, finishing = (json.loads(call.request.content) for call in route.calls)
    assert beginning == {"offset": 10, "text": "hello", "owner": "g1", "model": "b", "lease_seconds": 5}
    assert finishing["finish"]["parts"] == [
        {"model": "a", "offset": 0},
        {"model": "b", "offset": 10, "usage": {"total_tokens": 3}},
    ]


@respx.mock
async def test_a_message_read_carries_its_parts(client: PersistenceClient) -> None:
    parts = [{"model": "a", "offset": 0, "usage": None}, {"model": "b", "offset": 4, "usage": None}]
    respx.get(f"{BASE}/messages/{MESSAGE_ID}").mock(return_value=httpx.Response(200, json=_message()))
    assert (await client.messages.get(MESSAGE_ID)).answer_parts is None
    respx.get(f"{BASE}/messages/{MESSAGE_ID}").mock(return_value=httpx.Response(200, json=_message(answer_parts=parts)))
    message = await client.messages.get(MESSAGE_ID)
    assert [(part.model, part.offset) for part in message.answer_parts or []] == [("a", 0), ("b", 4)]
