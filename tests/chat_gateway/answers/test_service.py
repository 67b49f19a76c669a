import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from chat_gateway.answers import service
from chat_gateway.answers.events import StreamEvent
from chat_gateway.answers.recovery import Recovery
from chat_gateway.answers.service import Answers
from chat_gateway.chat.protocol import ChatRequest
from chat_gateway.clients.persistence import UNREACHABLE, PersistenceClient
from chat_gateway.config import Settings
from chat_gateway.upstreams import route
from chat_gateway.upstreams.registry import Upstreams
from shared import MessageStatus, ServiceUnavailable
from shared.contract import AppendResult
from testing.chunks import tokens
from testing.upstream import TEXT, Plan, create_fake_openai
from tests.chat_gateway.conftest import stored_message
from tests.conftest import serve

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def _fake_upstream() -> Iterator[FastAPI]:
    app = create_fake_openai()
    with serve(app) as url:
        app.state.url = f"{url}/v1"
        yield app


@pytest.fixture
def fake_upstream(_fake_upstream: FastAPI) -> FastAPI:
    _fake_upstream.state.plans.clear()
    _fake_upstream.state.requests.clear()
    return _fake_upstream


class _StoredTurns(httpx.AsyncBaseTransport):
    """Persistence answering every turn as a replay of a finished one; it notes when a request goes out.

    Like a real connection, it lets the event loop run once before the request is written.
    """

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)
        self.events.append("turn sent")
        answer = stored_message(content="Hello.", status=MessageStatus.COMPLETE).model_dump(mode="json")
        return httpx.Response(200, json={"inputs": [], "answer": answer})


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

    monkeypatch.setattr(route, "open_stream", open_stream)
    settings = Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk"))
    async with httpx.AsyncClient(base_url="http://persistence", transport=_StoredTurns(events)) as http:
        persistence = PersistenceClient(http, attempts=1, initial_wait=0, max_wait=0)
        upstreams = Upstreams.build(settings)
        answers = Answers(settings, persistence, upstreams)
        answer = await answers.start_chat(ChatRequest(message="Hi"), idempotency_key=None)
        await upstreams.close()

    assert events == ["turn sent", "upstream request built"]
    # A replay of a finished turn: the upstream request opened beside it is dropped.
    assert answer.status == MessageStatus.COMPLETE
    assert abandoned.is_set()


async def _follow(
    message_id: uuid.UUID, offset: int, persistence: Callable[[httpx.Request], httpx.Response], attempts: int = 1
) -> list[StreamEvent]:
    """Every event of following an answer generated elsewhere, through a persistence that answers ``persistence``."""
    settings = Settings(api_key=SecretStr("k"), reattach_poll_seconds=0.001)
    transport = httpx.MockTransport(persistence)
    async with httpx.AsyncClient(base_url="http://persistence", transport=transport) as http:
        persistence_client = PersistenceClient(http, attempts=attempts, initial_wait=0, max_wait=0)
        answers = Answers(settings, persistence_client, Upstreams([], settings.openai_model))
        return [event async for event in answers.follow(message_id, offset)]


def _text_in_progress(text: str = "Hel", offset: int = 0, version: int = 2) -> dict[str, object]:
    """An answer's text as persistence returns it to a follower while another gateway generates it."""
    length = offset + len(text)
    return {
        "id": str(uuid.uuid4()),
        "offset": offset,
        "text": text,
        "length": length,
        "version": version,
        "status": MessageStatus.IN_PROGRESS,
        "error": None,
        "finish_reason": None,
        "usage": None,
    }


async def test_following_an_answer_persistence_loses_track_of_ends_with_an_error_event() -> None:
    """An answer followed through persistence (generated elsewhere): an outage ends the stream, cleanly."""
    message_id = uuid.uuid4()
    answers_sent = iter([httpx.Response(200, json=_text_in_progress())])

    def persistence_answers(_request: httpx.Request) -> httpx.Response:
        return next(answers_sent, httpx.Response(503))

    events = await _follow(message_id, 0, persistence_answers, attempts=2)

    assert [(e.kind, e.offset, e.text, e.status) for e in events] == [("delta", 3, "Hel", None), ("error", 3, "", None)]
    assert events[-1].error is not None
    assert events[-1].error == f"lost track of the answer: {UNREACHABLE}"


def _behind(length: int) -> httpx.Response:
    detail = {"detail": "offset past the end", "code": "offset_mismatch", "length": length}
    return httpx.Response(409, json=detail)


@pytest.mark.parametrize("ends", ["later", "short"])
async def test_following_from_text_not_yet_saved_waits_for_it(ends: str) -> None:
    """The client saw "Hel" and "lo" from a gateway that had saved only "Hel": reading goes on from what is
    saved, and the client gets what comes after its offset; or an error if the answer ends before it."""
    message_id = uuid.uuid4()
    saved = _text_in_progress("", offset=3)
    if ends == "later":
        rest = [_text_in_progress("lo wo", offset=3, version=3), _text_in_progress("", offset=8, version=4)]
        rest[-1]["status"] = MessageStatus.COMPLETE
    else:
        rest = [saved | {"status": MessageStatus.FAILED, "version": 3, "error": "gateway crashed"}]
    answers_sent = iter([_behind(3), *(httpx.Response(200, json=body) for body in [saved, *rest])])
    asked_at: list[str] = []

    def persistence_answers(request: httpx.Request) -> httpx.Response:
        asked_at.append(request.url.params["offset"])
        return next(answers_sent)

    events = await _follow(message_id, 5, persistence_answers)

    if ends == "later":
        assert asked_at == ["5", "3", "3", "8"]
        assert [(e.kind, e.offset, e.text) for e in events] == [("delta", 8, " wo"), ("done", 8, "")]
    else:
        assert asked_at == ["5", "3", "3"]
        assert [(e.kind, e.offset, e.status) for e in events] == [("error", 5, MessageStatus.FAILED)]
        assert events[0].error == "the answer ended at 3, before offset 5"


async def test_following_an_answer_through_persistence_asks_only_for_changes() -> None:
    """Each poll names the text it has and its version: persistence answers 304 while nothing changed,
    and then only the new text."""
    message_id = uuid.uuid4()
    finished = _text_in_progress("lo", offset=3, version=3) | {"status": MessageStatus.COMPLETE}
    answers_sent = iter(
        [httpx.Response(200, json=_text_in_progress()), httpx.Response(304), httpx.Response(200, json=finished)]
    )
    asked_with: list[tuple[str, str | None]] = []

    def persistence_answers(request: httpx.Request) -> httpx.Response:
        asked_with.append((f"{request.url.path}?{request.url.query.decode()}", request.headers.get("If-None-Match")))
        return next(answers_sent)

    events = await _follow(message_id, 0, persistence_answers)

    url = f"/messages/{message_id}/text"
    assert asked_with == [(f"{url}?offset=0", None), (f"{url}?offset=3", '"2"'), (f"{url}?offset=3", '"2"')]
    assert [(e.kind, e.offset, e.text) for e in events] == [("delta", 3, "Hel"), ("delta", 5, "lo"), ("done", 5, "")]


class _SlowTurns(httpx.AsyncBaseTransport):
    """Persistence slow to store a turn (a busy database), taking every append."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.appended: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(await request.aread())
        if request.url.path.endswith("/turns"):
            await asyncio.sleep(self.delay)
            answer = stored_message(
                id=uuid.UUID(body["answer"]["id"]),
                session_id=uuid.UUID(request.url.path.split("/")[2]),
                content="",
                status=MessageStatus.IN_PROGRESS,
            )
            return httpx.Response(201, json={"inputs": [], "answer": answer.model_dump(mode="json")})
        assert request.url.path.endswith("/append"), request.url.path
        self.appended.append(body["text"])
        appended = AppendResult(
            id=uuid.UUID(request.url.path.split("/")[2]),
            length=body["offset"] + len(body["text"]),
            version=1,
            status=body["finish"]["status"] if body.get("finish") else MessageStatus.IN_PROGRESS,
            lease_expires_at=None,
        )
        return httpx.Response(200, json=appended.model_dump(mode="json"))


async def test_text_an_upstream_sent_while_the_turn_was_stored_survives_a_drop(fake_upstream: FastAPI) -> None:
    """A fast upstream that drops after 30 tokens, before the turn is stored and the stream is read: those
    tokens are kept and continued, not lost and generated again."""
    fake_upstream.state.plans.append(Plan(drop_after=30))
    settings = Settings(
        api_key=SecretStr("k"),
        openai_api_key=SecretStr("sk"),
        openai_base_url=fake_upstream.state.url,
        retry_initial_wait=0,
        retry_max_wait=0,
    )
    store = _SlowTurns(delay=0.5)
    http = httpx.AsyncClient(base_url="http://persistence", transport=store)
    client = Upstreams.build(settings)  # the gateway's own: aiohttp forgets what it buffered when a connection fails
    answers = Answers(settings, PersistenceClient(http, attempts=2, initial_wait=0, max_wait=0), client)
    try:
        answer = await answers.start_chat(ChatRequest(message="Hi"), idempotency_key=None)
        relayed = "".join([event.text async for event in answers._live[answer.id].events(0)])
    finally:
        await http.aclose()
        await client.close()
    assert relayed == TEXT
    assert "".join(store.appended) == TEXT
    requests = fake_upstream.state.requests
    assert len(requests) == 2
    assert requests[1]["messages"][-1] == {"role": "assistant", "content": "".join(tokens(TEXT)[:30])}


class _RestartingPersistence:
    """Persistence through a restart: the first turn is stored but its reply lost, then it is unreachable for
    ``down`` requests; afterwards it replays the stored turn, and takes claims, appends and updates."""

    def __init__(self, down: int, *, stored_late: bool = False) -> None:
        self.down = down
        self.stored_late = stored_late  # each try stores the turn anew and loses its reply: the last one stays
        self.answer: dict[str, Any] | None = None
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(f"{request.method} {request.url.path}")
        body = json.loads(request.content) if request.content else {}
        if request.url.path.endswith("/turns"):
            if self.answer is None or self.stored_late:
                now = datetime.now(UTC)
                self.answer = stored_message(
                    id=uuid.UUID(body["answer"]["id"]),
                    session_id=uuid.UUID(request.url.path.split("/")[2]),
                    lease_owner=body["owner"],
                    lease_expires_at=now,
                    sent_at=min(datetime.fromisoformat(body["sent_at"]), now),
                    created_at=now,
                ).model_dump(mode="json")
                raise httpx.ConnectError("reply lost")
            if self.down > 0:
                self.down -= 1
                raise httpx.ConnectError("connection refused")
            return httpx.Response(200, json={"inputs": [], "answer": self.answer})
        assert self.answer is not None
        if request.url.path == "/messages/stale":
            return httpx.Response(200, json=[self.answer])
        if request.url.path.endswith("/claim"):
            self.answer |= {"version": self.answer["version"] + 1}
            return httpx.Response(200, json=self.answer)
        if request.url.path.endswith("/append"):
            self.answer |= {"content": self.answer["content"] + body["text"], "version": self.answer["version"] + 1}
            if finish := body.get("finish"):
                self.answer |= {"status": finish["status"], "lease_owner": None}
            fields = ("id", "version", "status", "lease_expires_at")
            appended = {name: self.answer[name] for name in fields} | {"length": len(self.answer["content"])}
            return httpx.Response(200, json=appended)
        if request.method == "PATCH":
            if request.headers.get("if-match") != f'"{self.answer["version"]}"':
                return httpx.Response(412, json={"detail": "moved on", "code": "precondition_failed"})
            self.answer |= body | {"lease_owner": None, "version": self.answer["version"] + 1}
            return httpx.Response(200, json=self.answer)
        raise AssertionError(request.url.path)


def _gateway(fake_upstream: FastAPI, persistence: _RestartingPersistence, **overrides: Any) -> tuple[Answers, Any]:
    settings = Settings(
        api_key=SecretStr("k"),
        openai_api_key=SecretStr("sk"),
        openai_base_url=fake_upstream.state.url,
        retry_initial_wait=0,
        retry_max_wait=0,
        **overrides,
    )
    http = httpx.AsyncClient(base_url="http://persistence", transport=httpx.MockTransport(persistence))
    client = Upstreams.build(settings)
    store = PersistenceClient(http, attempts=2, initial_wait=0, max_wait=0)
    return Answers(settings, store, client), (http, client)


async def test_a_turn_whose_reply_was_lost_is_settled_then_answered_once(fake_upstream: FastAPI) -> None:
    persistence = _RestartingPersistence(down=4)
    answers, (http, client) = _gateway(fake_upstream, persistence, turn_settle_seconds=5)
    try:
        answer = await answers.start_chat(ChatRequest(message="Hi"), idempotency_key=None)
        relayed = "".join([event.text async for event in answers._live[answer.id].events(0)])
    finally:
        await http.aclose()
        await client.close()
    assert relayed == TEXT
    assert persistence.answer is not None
    assert (persistence.answer["content"], persistence.answer["status"]) == (TEXT, "complete")
    assert len(fake_upstream.state.requests) == 1  # the stream opened beside the turn served it: paid for once
    assert persistence.paths.count(f"POST /sessions/{answer.session_id}/turns") == 6  # lost, 4 refused, replayed


@pytest.mark.parametrize("stored_late", [False, True], ids=["stored-first", "stored-by-the-last-retry"])
async def test_a_chat_its_client_was_told_failed_is_never_generated(fake_upstream: FastAPI, stored_late: bool) -> None:
    # Stored by the last retry, just before its gateway gave up (a failover: persistence waited for the new primary
    # and committed it late): stored a moment ago, yet asked for a whole TURN_SETTLE_SECONDS before.
    persistence = _RestartingPersistence(down=10**6, stored_late=stored_late)
    answers, (http, client) = _gateway(fake_upstream, persistence, turn_settle_seconds=0.3)
    try:
        with pytest.raises(ServiceUnavailable) as refused:
            await answers.start_chat(ChatRequest(message="Hi"), idempotency_key=None)
        assert "will not be answered" in refused.value.detail
        assert "persistence:" not in refused.value.detail
        assert "http" not in refused.value.detail
        upstream_requests = len(fake_upstream.state.requests)
        # Persistence is back: the stored turn is found by crash recovery, on this gateway or any other.
        other, (other_http, other_client) = _gateway(fake_upstream, persistence, turn_settle_seconds=0.3)
        try:
            assert await Recovery(other).scan_once() == 0
        finally:
            await other_http.aclose()
            await other_client.close()
    finally:
        await http.aclose()
        await client.close()
    assert persistence.answer is not None
    assert (persistence.answer["status"], persistence.answer["error"]) == ("failed", service.NOT_STARTED)
    assert len(fake_upstream.state.requests) == upstream_requests  # nothing generated after the refusal
