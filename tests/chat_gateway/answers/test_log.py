"""The answer log (chat_gateway/answers/log.py) against a real Redis: one writer at a time, offsets checked in
bytes, a takeover going on from the longer of the log's text and the stored one; and a generation that shows
only durable text, whichever store makes it so."""

import asyncio
import contextlib
import uuid
from typing import Any

import pytest
from pydantic import SecretStr

from chat_gateway.answers.log import AnswerLog, LogError, LogFenced, LogWriter, connect
from chat_gateway.answers.text import AnswerText
from chat_gateway.config import Settings

pytestmark = pytest.mark.anyio


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


async def test_a_writer_that_lost_its_answer_logs_nothing_after_the_new_owner_forgot_it(log: AnswerLog) -> None:
    """make chaos, once in 25,000 chats: gateway-b relayed a new answer's first words under its lease and was paused
    before its append reached the log. gateway-a took the answer over (the log empty), completed it with other
    words and forgot its log. Resumed, b's append found no owner and an empty log, was taken at offset 0, and b's
    client was shown words the stored answer does not begin with."""
    answer = uuid.uuid4()
    buffer = AnswerText("")  # b's generation, a new turn's: it took nothing from the log
    fenced = asyncio.Event()
    writer = LogWriter(log, answer, "gateway-b:1", buffer, on_fenced=fenced.set, on_unreachable=lambda: None)
    buffer.add("where ")  # relayed: shown once logged
    # b is paused here; a claims the answer, generates it, completes it.
    assert await log.take(answer, "gateway-a:2", "") == ""
    assert await log.append(answer, "gateway-a:2", 0, "and and ") == 8
    await log.forget(answer)
    # b goes on: its append is refused, and its listeners are shown nothing.
    running = asyncio.create_task(writer.run())
    shown = asyncio.ensure_future(buffer.changed())
    writer.wake()
    refused = asyncio.ensure_future(fenced.wait())
    await asyncio.wait_for(asyncio.wait({shown, refused}, return_when=asyncio.FIRST_COMPLETED), 5)
    assert (fenced.is_set(), buffer.durable, await log.logged_length(answer)) == (True, 0, 0)
    await asyncio.wait_for(running, 5)
    shown.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await shown
    # The answer resumed later is taken over as ever: from the stored text, by its new owner alone.
    assert await log.take(answer, "gateway-a:3", "and and ") == "and and "
    assert await log.append(answer, "gateway-a:3", 8, "pralines") == 16
    await log.client.delete(*AnswerLog._keys(answer))


async def test_recovery_closes_an_unwritten_log_to_its_writer_and_leaves_a_written_one(log: AnswerLog) -> None:
    unwritten, written = uuid.uuid4(), uuid.uuid4()
    assert await log.close_unwritten(unwritten) == 0  # about to fail as never begun
    with pytest.raises(LogFenced):
        await log.append(unwritten, "a:1", 0, "late words")  # its writer, only paused
    assert await log.logged_length(unwritten) == 0
    assert await log.take(unwritten, "b:2", "") == ""  # a retry of the chat takes it up as ever
    assert await log.append(unwritten, "b:2", 0, "its answer") == 10

    await log.append(written, "a:1", 0, "shown")
    assert await log.close_unwritten(written) == 5  # shown: resumed, not failed
    assert await log.append(written, "a:1", 5, " on") == 8  # and its writer not fenced by the look
    for key in (unwritten, written):
        await log.client.delete(*AnswerLog._keys(key))


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
