"""Chat Completions served: an answer's chunks as OpenAI streams them."""

import json
import uuid
from collections.abc import AsyncIterator
from typing import cast

import pytest

from chat_gateway.answers.events import StreamEvent
from chat_gateway.answers.service import Answers
from chat_gateway.openai_api.chat_completions.serving import chunks
from shared import MessageStatus

ID = "00000000-0000-0000-0000-000000000000"


class _Following:
    """Answers whose follow yields the given events."""

    def __init__(self, *events: StreamEvent) -> None:
        self.events = events

    async def follow(self, _message_id: uuid.UUID, _offset: int) -> AsyncIterator[StreamEvent]:
        for event in self.events:
            yield event


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("event", "message"),
    [
        (StreamEvent("error", 2, status=MessageStatus.FAILED, error="boom"), "the answer failed: boom"),
        (StreamEvent("error", 2, error="lost track of the answer: down"), "lost track of the answer: down"),
    ],
)
async def test_an_openai_stream_ends_with_the_error_as_openai_sends_one(event: StreamEvent, message: str) -> None:
    answers = cast(Answers, _Following(StreamEvent("delta", 2, text="Hi"), event))
    lines = [line async for line in chunks(answers, uuid.UUID(ID), "m", include_usage=False)]
    assert json.loads(lines[-1].removeprefix("data: "))["error"] == {"message": message, "type": "api_error"}
    assert json.loads(lines[-2].removeprefix("data: "))["choices"][0]["delta"] == {"content": "Hi"}
