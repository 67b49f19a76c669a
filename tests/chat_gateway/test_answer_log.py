"""The answer log (chat_gateway/answer_log.py) against a real Redis: one writer at a time, offsets checked in
bytes, a takeover going on from the longer of the log's text and the stored one; and a generation that shows
only durable text, whichever store makes it so."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from chat_gateway.answer_log import AnswerLog, LogError, LogFenced, connect
from chat_gateway.answer_text import AnswerText
from chat_gateway.config import Settings
from tests.conftest import redis_url_or_skip

pytestmark = pytest.mark.anyio


@pytest.fixture
async def log() -> AsyncIterator[AnswerLog]:
    answer_log = connect(redis_url_or_skip(), timeout_seconds=2)
    yield answer_log
    await answer_log.close()


async def test_an_append_is_taken_only_from_its_owner_at_the_end_of_the_logged_text(log: AnswerLog) -> None:
    answer = uuid.uuid4()
    assert await log.append(answer, "a:1", 0, "Café ") == len("Café ".encode())
    assert await log.append(answer, "a:1", 6, "au lait") == 13  # offsets count bytes: é is two
    with pytest.raises(LogFenced):
        await log.append(answer, "b:2", 13, "!")  # another owner
    with pytest.raises(LogFenced):
        await log.append(answer, "a:1", 6, "!")  # not at the end: a write that was lost and sent again
    assert await log.logged_length(answer) == 13
    await log.forget(answer)
    assert await log.logged_length(answer) == 0


async def test_a_takeover_goes_on_from_the_longer_text_and_fences_the_old_owner(log: AnswerLog) -> None:
    answer = uuid.uuid4()
    await log.append(answer, "a:1", 0, "shown but not saved")
    assert await log.take(answer, "b:2", "shown but") == "shown but not saved"  # the log knows more
    with pytest.raises(LogFenced):
        await log.append(answer, "a:1", 19, " more")
    assert await log.append(answer, "b:2", 19, ", then more") == 30

    saved_more = uuid.uuid4()
    await log.append(saved_more, "a:1", 0, "logged")
    assert await log.take(saved_more, "b:2", "logged, and saved after") == "logged, and saved after"
    assert await log.logged_length(saved_more) == len("logged, and saved after")

    diverged = uuid.uuid4()  # not the start of what is stored: the stored text wins
    await log.append(diverged, "a:1", 0, "something else")
    assert await log.take(diverged, "b:2", "the stored text") == "the stored text"

    never_logged = uuid.uuid4()
    assert await log.take(never_logged, "b:2", "") == ""
    for key in (answer, saved_more, diverged, never_logged):
        await log.forget(key)


async def test_an_unreachable_log_raises_the_error_a_generation_falls_back_on() -> None:
    unreachable = connect("redis://127.0.0.1:1/0", timeout_seconds=0.5)
    try:
        with pytest.raises(LogError):
            await unreachable.append(uuid.uuid4(), "a:1", 0, "x")
    finally:
        await unreachable.close()


async def test_listeners_are_given_only_text_that_a_store_holds() -> None:
    buffer = AnswerText("")
    buffer.add("generated")
    assert buffer.durable == 0
    waiting = asyncio.ensure_future(buffer.changed())
    await asyncio.sleep(0)  # the listener waits
    buffer.mark_logged(4)
    await asyncio.wait_for(waiting, 1)
    assert buffer.text[: buffer.durable] == "gene"
    buffer.mark_saved(9)
    assert buffer.durable == 9
    buffer.mark_logged(2)  # the log behind persistence: what persistence holds may be shown
    assert buffer.durable == 9


def _settings(**fields: Any) -> Settings:
    return Settings(api_key=SecretStr("k"), **fields)


def test_the_answer_log_url_must_be_redis() -> None:
    assert _settings(answer_log_url=SecretStr("redis://127.0.0.1:6379/3")).answer_log_url is not None
    with pytest.raises(ValueError, match=r"redis://"):
        _settings(answer_log_url=SecretStr("http://127.0.0.1:6379"))
