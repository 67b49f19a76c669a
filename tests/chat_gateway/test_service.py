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
