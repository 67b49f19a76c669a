"""A new chat's first text logged while its turn is stored (chat_gateway/answers/opening.py): shown only once both
are done, under the owner its generation writes under, and forgotten whenever the turn is not this gateway's to
generate, before a client is told its chat failed; against a real Redis and a model that samples."""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from chat_gateway.answers import service
from chat_gateway.answers.log import ENDED, AnswerLog, connect, log_owner
from chat_gateway.answers.opening import NEW_ANSWER_VERSION, Opening
from chat_gateway.answers.plan import ChatPlan
from chat_gateway.answers.recovery import Recovery
from chat_gateway.answers.service import Answers
from chat_gateway.chat.protocol import ChatRequest
from chat_gateway.clients.persistence import PersistenceClient
from chat_gateway.config import Settings
from chat_gateway.upstreams.registry import Upstreams
from shared import MessageStatus, ServiceUnavailable
from shared.contract import MessageDetail, TurnCreate
from tests.chat_gateway.answers.test_service import _RestartingPersistence
from tests.chat_gateway.conftest import PERSISTENCE_KEY, LocalService, persistence_app_on, stored_message
from tests.conftest import redis_url_or_skip

pytestmark = pytest.mark.anyio


@pytest.fixture
def sampling(fake_openai: FastAPI) -> FastAPI:
    fake_openai.state.sample = True  # new words on every request: text shown and not stored would differ
    return fake_openai


async def _logged(log: AnswerLog, answer_id: uuid.UUID) -> str:
    text = await log.client.get(AnswerLog._keys(answer_id)[0])
    return text.decode() if isinstance(text, bytes) else ""


async def _owner(log: AnswerLog, answer_id: uuid.UUID) -> str | None:
    owner = await log.client.get(AnswerLog._keys(answer_id)[1])
    return owner.decode() if isinstance(owner, bytes) else None


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.005)


def _settings(upstream_url: str, **overrides: Any) -> Settings:
    return Settings(
        api_key=SecretStr("k"),
        openai_api_key=SecretStr("sk"),
        openai_base_url=f"{upstream_url}/v1",
        retry_initial_wait=0,
        retry_max_wait=0,
        **overrides,
    )


@contextlib.asynccontextmanager
async def _answers(persistence_url: str, upstream_url: str, log: AnswerLog, **settings: Any) -> AsyncIterator[Answers]:
    """A gateway's answers, with the answer log, on an in-process persistence service reached over the network."""
    http = httpx.AsyncClient(base_url=persistence_url, headers={"x-api-key": PERSISTENCE_KEY})
    config = _settings(upstream_url, **settings)
    upstreams = Upstreams.build(config)
    try:
        yield Answers(config, PersistenceClient(http, attempts=2, initial_wait=0, max_wait=0), upstreams, log)
    finally:
        await http.aclose()
        await upstreams.close()


@pytest.fixture
async def answers(persistence_app: LocalService, fake_openai_url: str, log: AnswerLog) -> AsyncIterator[Answers]:
    async with _answers(persistence_app.url, fake_openai_url, log) as answers:
        yield answers


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_a_new_answer_is_stored_at_the_version_its_text_is_logged_ahead_under(
    database: str, tmp_path: Path, fake_openai_url: str, log: AnswerLog
) -> None:
    """The read-ahead logs under ``instance:NEW_ANSWER_VERSION`` and the generation writes under
    ``instance:version``: were persistence to store a new answer at another version, every chat's first text
    would be refused to its own generation. Here is where that shows first."""
    with persistence_app_on(tmp_path, database) as persistence:
        async with _answers(persistence.url, fake_openai_url, log) as answers:
            answer = await answers.start_chat(ChatPlan(ChatRequest(message="Hi")), idempotency_key=None)
            generation = answers.generating(answer.id)
            assert generation is not None
            await generation.done.wait()
    assert answer.version == NEW_ANSWER_VERSION
    assert generation.log_writer is not None
    assert generation.log_writer.owner == log_owner(answers.settings.instance_id, NEW_ANSWER_VERSION)
    assert generation.status == MessageStatus.COMPLETE


async def test_the_first_text_is_logged_while_the_turn_is_stored_and_shown_once_both_are(
    answers: Answers, sampling: FastAPI, log: AnswerLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = answers.persistence.messages.start_turn
    seen_while_storing: list[tuple[str, bool]] = []

    async def stored_once_the_log_holds_text(
        session_id: uuid.UUID, turn: TurnCreate, scope: str | None = None
    ) -> tuple[MessageDetail, bool]:
        answer_id = turn.answer.id
        assert answer_id is not None
        await _until(lambda: _logged_text(answer_id))
        seen_while_storing.append((await _logged(log, answer_id), answers.generating(answer_id) is None))
        return await store(session_id, turn, scope)

    async def _logged_text(answer_id: uuid.UUID) -> bool:
        return bool(await _logged(log, answer_id))

    monkeypatch.setattr(answers.persistence.messages, "start_turn", stored_once_the_log_holds_text)
    answer = await answers.start_chat(ChatPlan(ChatRequest(message="Hi")), idempotency_key=None)
    generation = answers.generating(answer.id)
    assert generation is not None
    first, not_generating = seen_while_storing[0]
    assert generation.buffer.durable == len(first)  # before the generation has read a chunk: shown at once
    assert first  # logged while the turn was stored,
    assert not_generating  # by no generation: nobody is shown it
    relayed = "".join([event.text async for event in generation.events(0)])
    stored = await answers.persistence.messages.get(answer.id)
    assert relayed.startswith(first)
    assert (stored.status, stored.content) == (MessageStatus.COMPLETE, relayed)
    assert len(sampling.state.requests) == 1  # the stream opened beside the turn served it


class _TurnsOnceLogged(httpx.AsyncBaseTransport):
    """Persistence answering a turn with ``reply`` once the answer log holds its first text."""

    def __init__(self, log: AnswerLog, reply: Callable[[uuid.UUID], httpx.Response]) -> None:
        self.log = log
        self.reply = reply

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer_id = uuid.UUID(httpx.Response(200, content=await request.aread()).json()["answer"]["id"])

        async def logged() -> bool:
            return bool(await _logged(self.log, answer_id))

        await _until(logged)
        return self.reply(answer_id)


def _another_answer(_answer_id: uuid.UUID) -> httpx.Response:
    """A request key's retry: the first request's answer, complete."""
    answer = stored_message(content="Hello.", status=MessageStatus.COMPLETE).model_dump(mode="json")
    return httpx.Response(200, json={"inputs": [], "answer": answer})


def _refused(_answer_id: uuid.UUID) -> httpx.Response:
    return httpx.Response(409, json={"detail": "budget", "code": "budget_exceeded", "retry_after": 5})


@pytest.mark.parametrize("reply", [_another_answer, _refused], ids=["stored-as-another", "refused"])
async def test_text_logged_ahead_of_a_turn_that_is_not_this_gateways_is_forgotten(
    reply: Callable[[uuid.UUID], httpx.Response], sampling: FastAPI, fake_openai_url: str, log: AnswerLog
) -> None:
    config = _settings(fake_openai_url)
    upstreams = Upstreams.build(config)
    turns: list[uuid.UUID] = []

    def noted(answer_id: uuid.UUID) -> httpx.Response:
        turns.append(answer_id)
        return reply(answer_id)

    transport = _TurnsOnceLogged(log, noted)
    async with httpx.AsyncClient(base_url="http://persistence", transport=transport) as http:
        answers = Answers(config, PersistenceClient(http, attempts=1, initial_wait=0, max_wait=0), upstreams, log)
        try:
            with contextlib.suppress(Exception):
                await answers.start_chat(ChatPlan(ChatRequest(message="Hi")), idempotency_key=None)
        finally:
            await upstreams.close()
    assert len(turns) == 1
    assert (await _logged(log, turns[0]), await _owner(log, turns[0])) == ("", ENDED)
    assert answers._live == {}


class _LostThenDown(_RestartingPersistence):
    """A turn stored and its reply lost once its first text is logged; persistence then stays unreachable.
    Recovery's scan finds the stored answer once it is back."""

    def __init__(self, log: AnswerLog) -> None:
        super().__init__(down=10**6)
        self.log = log

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/turns") and self.answer is None:
            answer_id = uuid.UUID(httpx.Response(200, content=request.content).json()["answer"]["id"])

            async def logged() -> bool:
                return bool(await _logged(self.log, answer_id))

            await _until(logged)
        return self(request)


async def test_a_gateway_that_gives_up_on_a_turn_forgets_its_logged_text_before_telling_its_client(
    sampling: FastAPI, fake_openai_url: str, log: AnswerLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    persistence = _LostThenDown(log)
    config = _settings(fake_openai_url, turn_settle_seconds=0.3)
    upstreams = Upstreams.build(config)
    http = httpx.AsyncClient(base_url="http://persistence", transport=httpx.MockTransport(persistence.handle))
    answers = Answers(config, PersistenceClient(http, attempts=2, initial_wait=0, max_wait=0), upstreams, log)
    settle = answers._settle_turn
    logged_when_settled: list[str] = []

    async def settled(*args: Any) -> tuple[MessageDetail, bool]:
        assert persistence.answer is not None
        logged_when_settled.append(await _logged(log, uuid.UUID(persistence.answer["id"])))
        return await settle(*args)

    monkeypatch.setattr(answers, "_settle_turn", settled)
    try:
        with pytest.raises(ServiceUnavailable):
            await answers.start_chat(ChatPlan(ChatRequest(message="Hi")), idempotency_key=None)
        requests = len(sampling.state.requests)
        # Persistence is back: crash recovery finds the stored answer, with nothing logged of it.
        assert await Recovery(answers).scan_once() == 0
    finally:
        await http.aclose()
        await upstreams.close()
    assert logged_when_settled == [""]  # forgotten before the turn was settled, so before any give-up
    assert persistence.answer is not None
    assert (persistence.answer["status"], persistence.answer["error"]) == ("failed", service.NOT_STARTED)
    assert len(sampling.state.requests) == requests  # never generated


async def test_a_gateway_killed_between_its_logged_text_and_its_turns_reply_is_continued_as_stored(
    persistence_app: LocalService,
    sampling: FastAPI,
    fake_openai_url: str,
    log: AnswerLog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The turn stored (in progress, under the dead gateway's lease), its first text logged, no reply seen: crash
    recovery goes on from the logged text, and a client that reconnects holds exactly what is stored."""
    async with (
        _answers(persistence_app.url, fake_openai_url, log, lease_seconds=0.3, instance_id="dying") as dying,
        _answers(persistence_app.url, fake_openai_url, log, lease_seconds=5, instance_id="other") as other,
    ):
        store = dying.persistence.messages.start_turn
        killed = asyncio.Event()
        stored: list[MessageDetail] = []

        async def stored_then_killed(
            session_id: uuid.UUID, turn: TurnCreate, scope: str | None = None
        ) -> tuple[MessageDetail, bool]:
            answer, created = await store(session_id, turn, scope)
            stored.append(answer)
            await _until(lambda: _has_text(answer.id))
            killed.set()
            await asyncio.Event().wait()  # the reply never reaches the gateway: it died
            return answer, created

        async def _has_text(answer_id: uuid.UUID) -> bool:
            return bool(await _logged(log, answer_id))

        monkeypatch.setattr(dying.persistence.messages, "start_turn", stored_then_killed)
        chat = asyncio.create_task(dying.start_chat(ChatPlan(ChatRequest(message="Hi")), idempotency_key=None))
        await killed.wait()
        answer_id = stored[0].id
        head = await _logged(log, answer_id)

        async def recovered() -> bool:
            return await Recovery(other).scan_once() == 1

        await _until(recovered)
        generation = other.generating(answer_id)
        assert generation is not None
        await generation.done.wait()
        held = "".join([event.text async for event in other.follow(answer_id, 0) if event.kind == "delta"])
        final = await other.persistence.messages.get(answer_id)
        chat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await chat
    assert final.status == MessageStatus.COMPLETE
    assert final.content.startswith(head)
    assert held == final.content
    assert len(sampling.state.requests) == 2  # the dead gateway's stream, then the continuation from the log
    assert sampling.state.requests[1]["messages"][-1] == {"role": "assistant", "content": head}


async def test_an_answer_stored_at_another_version_is_not_generated_from_the_opening(fake_openai_url: str) -> None:
    began, closed = asyncio.Event(), asyncio.Event()

    async def opens() -> Any:
        began.set()
        try:
            await asyncio.sleep(3600)
        finally:
            closed.set()

    opening = Opening(opens, connect(redis_url_or_skip(), timeout_seconds=2), uuid.uuid4(), "gw")
    await began.wait()
    try:
        assert not await opening.fits(stored_message(version=NEW_ANSWER_VERSION + 1))
    finally:
        assert opening.log is not None
        await opening.log.close()
    assert closed.is_set()  # its request abandoned: the generation takes the log over and opens its own
    # Without a log nothing was logged ahead: any version fits, as before.
    unlogged = Opening(opens, None, uuid.uuid4(), "gw")
    assert await unlogged.fits(stored_message(version=3))
    await unlogged.close()


async def test_a_first_text_logged_only_after_its_turn_came_back_is_shown_once_logged(
    answers: Answers, sampling: FastAPI, log: AnswerLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    append, turn_back = log.append, asyncio.Event()

    async def append_after_the_turn(message_id: uuid.UUID, owner: str, logged_bytes: int, text: str) -> int:
        await turn_back.wait()
        return await append(message_id, owner, logged_bytes, text)

    monkeypatch.setattr(log, "append", append_after_the_turn)
    answer = await answers.start_chat(ChatPlan(ChatRequest(message="Hi")), idempotency_key=None)
    generation = answers.generating(answer.id)
    assert generation is not None
    assert generation.buffer.durable == 0  # nothing durable yet: nothing shown
    turn_back.set()
    relayed = "".join([event.text async for event in generation.events(0)])
    stored = await answers.persistence.messages.get(answer.id)
    assert (stored.status, stored.content) == (MessageStatus.COMPLETE, relayed)
    assert len(sampling.state.requests) == 1
