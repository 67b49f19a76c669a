import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from unittest.mock import ANY

import pytest
from fastapi import FastAPI
from openai import AsyncOpenAI
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from chat_gateway.answers.generation import Generation
from chat_gateway.answers.log import AnswerLog, connect
from chat_gateway.clients.persistence import AnswerStore, PersistenceError
from chat_gateway.config import ContinuationMethod, Settings
from chat_gateway.upstreams.config import UpstreamConfig
from chat_gateway.upstreams.route import Candidate, Route
from chat_gateway.upstreams.upstream import Upstream
from shared import Conflict, MessageRole, MessageStatus, NotFound
from shared.contract import AnswerFinish, MessageDetail
from testing.chunks import tokens
from testing.upstream import TEXT, Plan
from tests.chat_gateway.conftest import FakeStore, stored_message
from tests.conftest import redis_url_or_skip, serve

pytestmark = pytest.mark.anyio

WORDS = [f"w{i} " for i in range(50)]
# What a model may send that no database stores: a NUL, unpaired surrogates, a pair split across two chunks.
ODD_WORDS = ["a\x00b ", "x\ud83d", "\ude00 y", "z\udfff", "\ud800"]


def _sse(words: list[str]) -> bytes:
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]} for word in words
    ]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"


class _Store(FakeStore):
    """Persistence that takes every append."""

    def __init__(self) -> None:
        self.appended: list[str] = []

    async def append(self, message_id: uuid.UUID, offset: int, text: str, **_kwargs: Any) -> int:
        self.appended.append(text)
        return offset + len(text)


def _answer(content: str = "", options: dict[str, Any] | None = None) -> MessageDetail:
    now = datetime.now(UTC)
    return stored_message(
        id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        role=MessageRole.ASSISTANT,
        content=content,
        status=MessageStatus.IN_PROGRESS,
        options=options,
        created_at=now,
    )


class _Deleted(FakeStore):
    """Persistence after the answer's session was deleted."""

    def __init__(self) -> None:
        self.appends = 0

    async def append(self, message_id: uuid.UUID, *_args: Any, **_kwargs: Any) -> int:
        self.appends += 1
        raise NotFound(f"message {message_id} not found")


_CLIENTS: list[AsyncOpenAI] = []


@pytest.fixture(autouse=True)
async def _clients_closed() -> AsyncIterator[None]:
    """Each test's upstream clients closed on its own event loop: collected later, they would close on a dead one."""
    yield
    while _CLIENTS:
        await _CLIENTS.pop().close()


def _generation(
    settings: Settings,
    store: AnswerStore,
    upstream_url: str,
    answer: MessageDetail | None = None,
    log: AnswerLog | None = None,
    continuation: ContinuationMethod = "restart",
) -> Generation:
    client = AsyncOpenAI(api_key="sk", base_url=upstream_url, max_retries=0)
    _CLIENTS.append(client)
    upstream = Upstream(UpstreamConfig(name="default", base_url=upstream_url, models="any"), client, continuation)
    return Generation(
        answer or _answer(),
        route=Route("m", [Candidate(upstream, "m")]),
        settings=settings,
        persistence=store,
        on_finish=lambda _generation: None,
        prompt=[{"role": "user", "content": "Hi"}],
        log=log,
    )


async def _relayed(upstream_url: str) -> tuple[Generation, _Store, str]:
    """A whole answer from ``upstream_url`` into a persistence that takes every append, and the text relayed."""
    store = _Store()
    generation = _generation(Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk")), store, upstream_url)
    generation.start()
    return generation, store, "".join([event.text async for event in generation.events(0)])


async def _whole_answer_at_once(_request: Request) -> Response:
    # One write, as from a fast upstream: reading the stream never has to wait.
    return Response(_sse(WORDS), media_type="text/event-stream")


async def _one_word_every_20_ms(_request: Request) -> StreamingResponse:
    async def words() -> AsyncIterator[bytes]:
        for event in _sse(WORDS).split(b"\n\n"):
            yield event + b"\n\n"
            await asyncio.sleep(0.02)

    return StreamingResponse(words(), media_type="text/event-stream")


async def _odd_characters(_request: Request) -> Response:
    return Response(_sse(ODD_WORDS), media_type="text/event-stream")


async def _odd_shapes(_request: Request) -> Response:
    """Chunks no OpenAI server sends, around a model name and a finish reason longer than their columns."""
    chunks: list[Any] = [
        {"choices": {"0": {"delta": {"content": "lost"}}}},
        {"choices": ["lost"]},
        {"choices": [{"delta": "lost"}]},
        {"model": 42, "choices": [{"delta": {"content": "kept "}, "finish_reason": None}]},
        {"model": "m" * 300, "choices": [{"delta": {"content": 7}, "finish_reason": "x" * 100}]},
    ]
    body = b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"
    return Response(body, media_type="text/event-stream")


class _Refusing(FakeStore):
    """Persistence that refuses every append carrying text (a 422), and records each append."""

    def __init__(self, delay: float = 0.0) -> None:
        self.appends: list[tuple[int, str, AnswerFinish | None]] = []
        self.delay = delay

    async def append(self, message_id: uuid.UUID, offset: int, text: str, **kwargs: Any) -> int:
        self.appends.append((offset, text, kwargs.get("finish")))
        await asyncio.sleep(self.delay)
        if text:
            raise PersistenceError("persistence rejected a request: body: no", persistence_status=422)
        return offset


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    app = FastAPI()
    app.add_route("/v1/chat/completions", _whole_answer_at_once, methods=["POST"])
    app.add_route("/slow/v1/chat/completions", _one_word_every_20_ms, methods=["POST"])
    app.add_route("/odd/v1/chat/completions", _odd_characters, methods=["POST"])
    app.add_route("/shapes/v1/chat/completions", _odd_shapes, methods=["POST"])
    with serve(app) as url:
        yield f"{url}/v1"


async def test_the_first_words_reach_listeners_before_a_buffered_answer_is_read_to_its_end(upstream_url: str) -> None:
    settings = Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk"), openai_base_url=upstream_url)
    store = _Store()
    generation = _generation(settings, store, upstream_url)
    generation.start()
    read_when_first_sent = None
    received = []
    async for event in generation.events(0):
        if event.kind == "delta" and read_when_first_sent is None:
            read_when_first_sent = len(generation.text)
        received.append(event.text)
    assert read_when_first_sent == len(WORDS[0])
    assert "".join(received) == "".join(WORDS)
    assert "".join(store.appended) == "".join(WORDS)


async def _durable_when_shown(generation: Generation, store: _Store) -> str:
    """What a listener is given, each piece checked to be saved already when it is given."""
    shown = ""
    async for event in generation.events(0):
        shown += event.text
        if event.kind == "delta":
            assert event.offset <= len("".join(store.appended)), "shown before it was saved"
    return shown


@pytest.mark.parametrize("path", ["/v1", "/slow/v1"])
async def test_without_an_answer_log_a_listener_is_given_only_saved_text(upstream_url: str, path: str) -> None:
    url = upstream_url.replace("/v1", path)
    store = _Store()
    generation = _generation(Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk")), store, url)
    generation.start()
    assert await _durable_when_shown(generation, store) == "".join(WORDS) == "".join(store.appended)


async def test_with_its_answer_log_unreachable_a_generation_makes_text_durable_in_persistence(
    upstream_url: str,
) -> None:
    slow = upstream_url.replace("/v1", "/slow/v1")
    store = _Store()
    settings = Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk"))
    log = connect("redis://127.0.0.1:1/0", timeout_seconds=0.2)
    generation = _generation(settings, store, slow, log=log)
    generation.start()
    try:
        assert await _durable_when_shown(generation, store) == "".join(WORDS) == "".join(store.appended)
    finally:
        await log.close()
    assert generation.log_writer is not None
    assert not generation.log_writer.working


class _PausedBeforeItsFirstAppend(AnswerLog):
    """The answer log of a gateway paused after it relayed its first words, before its append reached the log."""

    def __init__(self, log: AnswerLog, resumed: asyncio.Event) -> None:
        super().__init__(log.client)
        self.paused = asyncio.Event()
        self.resumed = resumed

    async def append(self, message_id: uuid.UUID, owner: str, logged_bytes: int, text: str) -> int:
        self.paused.set()
        await self.resumed.wait()
        return await super().append(message_id, owner, logged_bytes, text)


class _EndedWhilePaused(FakeStore):
    """Persistence as the paused gateway finds it once resumed: the answer ended by another gateway."""

    def __init__(self, resumed: asyncio.Event, status: MessageStatus) -> None:
        self.resumed = resumed
        self.status = status

    async def append(self, message_id: uuid.UUID, offset: int, text: str, **_kwargs: Any) -> int:
        await self.resumed.wait()
        raise Conflict(f"a {self.status} message cannot be appended to", status=self.status, length=0)


async def _completed_elsewhere(log: AnswerLog, answer: uuid.UUID) -> None:
    assert await log.take(answer, "gateway-a:2", "") == ""  # gateway-a's claim, then its answer
    assert await log.append(answer, "gateway-a:2", 0, "and and ") == 8
    await log.forget(answer)


async def _failed_as_never_begun(log: AnswerLog, answer: uuid.UUID) -> None:
    assert await log.close_unwritten(answer) == 0  # gateway-a's crash recovery, then its update to failed


@pytest.mark.parametrize(
    ("elsewhere", "status"),
    [(_completed_elsewhere, MessageStatus.COMPLETE), (_failed_as_never_begun, MessageStatus.FAILED)],
    ids=["completed-elsewhere", "failed-as-never-begun"],
)
async def test_a_gateway_paused_before_logging_its_first_words_shows_none_once_its_answer_ended_elsewhere(
    upstream_url: str, elsewhere: Callable[[AnswerLog, uuid.UUID], Awaitable[None]], status: MessageStatus
) -> None:
    """make chaos: gateway-b relayed a new answer's first words and was paused before its append reached the answer
    log; gateway-a took the answer over (nothing logged, nothing saved), completed it with other words, and forgot
    its log. Resumed, b logged its words in the forgotten log and showed them to its client. The same where
    gateway-a's crash recovery failed the answer as never begun (its turn stored long ago, nothing written)."""
    log = connect(redis_url_or_skip(), timeout_seconds=2)
    resumed = asyncio.Event()
    paused = _PausedBeforeItsFirstAppend(log, resumed)
    settings = Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk"), instance_id="gateway-b")
    generation = _generation(settings, _EndedWhilePaused(resumed, status), upstream_url, log=paused)
    answer = generation.message_id
    try:
        generation.start()
        listener = asyncio.ensure_future(_events_of(generation))
        await paused.paused.wait()
        await elsewhere(log, answer)
        resumed.set()
        events = await asyncio.wait_for(listener, 10)
        assert [(event.kind, event.text) for event in events] == [("handoff", "")]
        assert await log.logged_length(answer) == 0
    finally:
        await log.client.delete(*AnswerLog._keys(answer))
        await log.close()


async def _events_of(generation: Generation) -> list[Any]:
    return [event async for event in generation.events(0)]


async def test_an_answer_deleted_while_generated_stops_generating(upstream_url: str) -> None:
    """Its session deleted mid-answer: the next append finds nothing, and the upstream is not read to the end."""
    slow = upstream_url.replace("/v1", "/slow/v1")
    settings = Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk"), flush_interval_seconds=0.05)
    store = _Deleted()
    generation = _generation(settings, store, slow)
    generation.start()
    events = [event async for event in generation.events(0)]
    assert generation.task is not None
    await generation.task  # ended without an error of its own
    assert store.appends == 1
    assert generation.status is None
    assert 0 < len(generation.text) < len("".join(WORDS))
    assert (events[-1].kind, events[-1].error) == ("error", "the answer was deleted (with its session)")


class _Finishes(_Store):
    """Persistence that takes every append, and notes how the answer ended."""

    def __init__(self) -> None:
        super().__init__()
        self.finish: AnswerFinish | None = None

    async def append(self, message_id: uuid.UUID, offset: int, text: str, **kwargs: Any) -> int:
        self.finish = kwargs.get("finish") or self.finish
        return await super().append(message_id, offset, text)


@pytest.mark.parametrize("path", ["/v1", "/slow/v1"], ids=["unpaced", "paced"])
async def test_a_cancel_that_comes_as_the_first_words_are_saved_stops_the_answer(
    upstream_url: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving a cancelled background response was seen to lose, replayed: the cancel comes once the
    first save has returned, before the generation, which waited for it, reads on. (Python 3.11's
    asyncio.wait_for returned what it waited for and dropped the cancel: the answer was generated to its end.)"""
    store = _Finishes()
    settings = Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk"))
    generation = _generation(settings, store, upstream_url.replace("/v1", path))
    saved = generation.buffer.changed

    async def saved_then_cancelled() -> None:
        await saved()
        generation.stop("cancelled")

    monkeypatch.setattr(generation.buffer, "changed", saved_then_cancelled)
    generation.start()
    await generation.done.wait()
    assert (generation.status, generation.error) == (MessageStatus.FAILED, "cancelled")
    assert store.finish is not None
    assert (store.finish.status, store.finish.error) == (MessageStatus.FAILED, "cancelled")
    assert 0 < len("".join(store.appended)) < len("".join(WORDS))


async def test_an_answer_whose_token_limit_was_spent_before_it_broke_off_ends_there() -> None:
    """Resuming 40 characters (about 10 tokens) of an answer limited to 8 tokens: nothing is asked of the model."""
    settings = Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk"), retry_attempts=1)
    store = _Store()
    partial = "".join(WORDS[:10])
    answer = _answer(partial, options={"max_tokens": 8, "temperature": 0})
    generation = _generation(settings, store, "http://127.0.0.1:1/v1", answer)  # nothing listens there
    generation.start()
    events = [event async for event in generation.events(len(partial))]
    assert [(e.kind, e.status, e.finish_reason) for e in events] == [("done", MessageStatus.COMPLETE, "length")]
    assert generation.text == partial


async def test_text_no_database_could_store_is_made_storable_before_anyone_sees_it(upstream_url: str) -> None:
    """Relayed and stored alike: the split pair joined, NUL and unpaired surrogates made U+FFFD."""
    generation, store, received = await _relayed(upstream_url.replace("/v1", "/odd/v1"))
    assert received == "a\ufffdb x\U0001f600 yz\ufffd\ufffd"
    assert "".join(store.appended) == received
    assert generation.status == MessageStatus.COMPLETE


async def test_odd_chunks_are_skipped_and_labels_too_long_for_their_columns_clipped(upstream_url: str) -> None:
    """Refused by persistence, a finish reason would have failed the answer and lost its text (the name an
    upstream reports for its model is not stored: the configured one is, chat_gateway/answers/parts.py)."""
    generation, store, received = await _relayed(upstream_url.replace("/v1", "/shapes/v1"))
    assert (received, "".join(store.appended), generation.status) == ("kept ", "kept ", MessageStatus.COMPLETE)
    assert generation.finish_reason == "x" * 64


@pytest.mark.parametrize(
    ("path", "flush_bytes", "delay"),
    [("/slow/v1", 4096, 0.0), ("/v1", 4096, 0.0), ("/v1", 1, 0.1)],
    ids=["while-streaming", "at-the-end", "refused-as-the-upstream-ends"],
)
async def test_a_write_persistence_refuses_ends_the_answer_failed_with_what_is_stored(
    upstream_url: str, path: str, flush_bytes: int, delay: float
) -> None:
    """Not left in progress, where crash recovery would generate it again and be refused again, for ever;
    nor complete with only part of its text, when the refusal comes after the upstream's last chunk."""
    settings = Settings(
        api_key=SecretStr("k"), openai_api_key=SecretStr("sk"), flush_interval_seconds=0.05, flush_bytes=flush_bytes
    )
    store = _Refusing(delay)
    generation = _generation(settings, store, upstream_url.replace("/v1", path))
    generation.start()
    events = [event async for event in generation.events(0)]
    assert generation.task is not None
    await generation.task  # ended without an error of its own
    refusal = "persistence rejected a request: body: no"
    assert (generation.status, generation.error) == (MessageStatus.FAILED, refusal)
    assert (events[-1].kind, events[-1].error) == ("error", refusal)
    offset, text, finish = store.appends[-1]
    assert (offset, text) == (0, "")
    assert finish is not None
    assert (finish.status, finish.error) == ("failed", refusal)
    assert len([text for _offset, text, _finish in store.appends if text]) == 1  # the text was offered once
    if path == "/slow/v1":  # the model was stopped: tokens nobody could keep are not bought
        assert len(generation.text) < len("".join(WORDS))


# Each method against a fake that continues as its servers do (testing/upstream.py's ``as_continued``).
METHODS_AND_SERVERS: list[tuple[ContinuationMethod, str | None, Plan]] = [
    ("exact", "llama.cpp", Plan()),
    ("vllm", "vllm", Plan()),
    ("prefix", "mistral", Plan()),  # its reply begins with the prefix, as Mistral's API's does
    ("restart", None, Plan(restart=True, echo_brackets=True)),  # a model that repeats the anchor in its brackets
]


@pytest.mark.parametrize(
    ("method", "server", "continued"), METHODS_AND_SERVERS, ids=["exact", "vllm", "prefix", "restart"]
)
async def test_a_continuation_is_asked_for_in_the_upstreams_way_and_joins_whole(
    fake_openai: FastAPI, fake_openai_url: str, method: ContinuationMethod, server: str | None, continued: Plan
) -> None:
    fake_openai.state.server = server
    fake_openai.state.plans.extend([Plan(drop_after=12), continued])
    settings = Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk"), retry_initial_wait=0, retry_max_wait=0)
    store = _Store()
    generation = _generation(settings, store, f"{fake_openai_url}/v1", continuation=method)
    generation.start()
    assert "".join([event.text async for event in generation.events(0)]) == TEXT
    assert "".join(store.appended) == TEXT
    first, second = fake_openai.state.requests
    partial = "".join(tokens(TEXT)[:12])
    assert first["messages"] == [{"role": "user", "content": "Hi"}]  # a new answer: nothing to continue
    flags = {"continue_final_message": True, "add_generation_prompt": False}
    assert not flags.keys() & first.keys()
    last = {"role": "assistant", "content": partial} | ({"prefix": True} if method == "prefix" else {})
    assert second["messages"][-1] == last
    # Only a restarting upstream is told what to do; the others are asked with the answer's own prompt.
    assert second["messages"][:-1] == ([*first["messages"], ANY] if method == "restart" else first["messages"])
    assert {key: second[key] for key in flags if key in second} == (flags if method == "vllm" else {})


async def test_vllm_asked_without_its_flags_glues_a_new_answer_to_the_cut_text(
    fake_openai: FastAPI, fake_openai_url: str
) -> None:
    """What issue 37 saw: an upstream that opens a new message, taken as one that continues the text."""
    fake_openai.state.server = "vllm"
    fake_openai.state.plans.append(Plan(drop_after=12))
    settings = Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk"), retry_initial_wait=0, retry_max_wait=0)
    generation = _generation(settings, _Store(), f"{fake_openai_url}/v1", continuation="exact")
    generation.start()
    assert "".join([event.text async for event in generation.events(0)]) == "".join(tokens(TEXT)[:12]) + TEXT
