import asyncio
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from openai import AsyncOpenAI
from pydantic import SecretStr

from chat_gateway import service
from chat_gateway.config import Settings
from chat_gateway.persistence import PersistenceClient
from chat_gateway.schemas import ChatRequest
from chat_gateway.service import Answers
from shared import MessageRole, MessageStatus

pytestmark = pytest.mark.anyio


class _StoredTurns(httpx.AsyncBaseTransport):
    """Persistence answering every turn as a replay of a finished one; it notes when a request goes out.

    Like a real connection, it lets the event loop run once before the request is written.
    """

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)
        self.events.append("turn sent")
        now = datetime.now(UTC).isoformat()
        answer = {
            "id": str(uuid.uuid4()),
            "session_id": str(uuid.uuid4()),
            "role": MessageRole.ASSISTANT,
            "content": "Hello.",
            "status": MessageStatus.COMPLETE,
            "created_at": now,
        }
        return httpx.Response(200, json={"question": {}, "answer": answer})


async def test_the_turn_goes_out_before_the_upstream_request_opened_beside_it_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    abandoned = asyncio.Event()

    async def open_stream(*_args: object) -> None:
        events.append("upstream request built")
        try:
            await asyncio.sleep(3600)
        finally:
            abandoned.set()

    monkeypatch.setattr(service, "open_stream", open_stream)
    settings = Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk"))
    async with httpx.AsyncClient(base_url="http://persistence", transport=_StoredTurns(events)) as http:
        persistence = PersistenceClient(http, attempts=1, initial_wait=0, max_wait=0)
        answers = Answers(settings, persistence, AsyncOpenAI(api_key="sk", max_retries=0))
        answer = await answers.start_chat(ChatRequest(message="Hi"), idempotency_key=None)

    assert events == ["turn sent", "upstream request built"]
    # A replay of a finished turn: the upstream request opened beside it is dropped.
    assert answer.status == MessageStatus.COMPLETE
    assert abandoned.is_set()


def _answer_in_progress(message_id: uuid.UUID) -> dict[str, object]:
    """An answer as persistence stores it while another gateway generates it."""
    return {
        "id": str(message_id),
        "session_id": str(uuid.uuid4()),
        "role": MessageRole.ASSISTANT,
        "content": "Hel",
        "status": MessageStatus.IN_PROGRESS,
        "created_at": datetime.now(UTC).isoformat(),
    }


async def test_following_an_answer_persistence_loses_track_of_ends_with_an_error_event() -> None:
    """An answer followed through persistence (generated elsewhere): an outage ends the stream, cleanly."""
    message_id = uuid.uuid4()
    answers_sent = iter([httpx.Response(200, json=_answer_in_progress(message_id))])

    def persistence_answers(_request: httpx.Request) -> httpx.Response:
        return next(answers_sent, httpx.Response(503))

    settings = Settings(api_key=SecretStr("k"), reattach_poll_seconds=0.001)
    transport = httpx.MockTransport(persistence_answers)
    async with httpx.AsyncClient(base_url="http://persistence", transport=transport) as http:
        answers = Answers(settings, PersistenceClient(http, attempts=2, initial_wait=0, max_wait=0), None)
        events = [event async for event in answers.follow(message_id, 0)]

    assert [(e.kind, e.offset, e.text, e.status) for e in events] == [("delta", 3, "Hel", None), ("error", 3, "", None)]
    assert events[-1].error is not None
    assert events[-1].error.startswith("lost track of the answer: persistence service unreachable")


async def test_following_an_answer_through_persistence_asks_only_for_changes() -> None:
    """Each poll names the version it has: persistence answers 304 while the answer has not changed."""
    message_id = uuid.uuid4()
    stored = _answer_in_progress(message_id) | {"version": 2}
    finished = stored | {"content": "Hello", "status": MessageStatus.COMPLETE, "version": 3}
    answers_sent = iter([httpx.Response(200, json=stored), httpx.Response(304), httpx.Response(200, json=finished)])
    asked_with: list[str | None] = []

    def persistence_answers(request: httpx.Request) -> httpx.Response:
        asked_with.append(request.headers.get("If-None-Match"))
        return next(answers_sent)

    settings = Settings(api_key=SecretStr("k"), reattach_poll_seconds=0.001)
    transport = httpx.MockTransport(persistence_answers)
    async with httpx.AsyncClient(base_url="http://persistence", transport=transport) as http:
        answers = Answers(settings, PersistenceClient(http, attempts=1, initial_wait=0, max_wait=0), None)
        events = [event async for event in answers.follow(message_id, 0)]

    assert asked_with == [None, '"2"', '"2"']
    assert [(e.kind, e.offset, e.text) for e in events] == [("delta", 3, "Hel"), ("delta", 5, "lo"), ("done", 5, "")]
