import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from chat_gateway.answers.recovery import Recovery
from chat_gateway.answers.service import Answers
from chat_gateway.clients.persistence import PersistenceClient
from chat_gateway.config import Settings
from chat_gateway.upstreams.registry import Upstreams
from shared.contract import MessageDetail
from tests.chat_gateway.conftest import PERSISTENCE_KEY, LocalService

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def _answers(persistence_app: LocalService, upstream_url: str) -> AsyncIterator[Answers]:
    """A gateway's answers on the module's in-process persistence service, reached over the network."""
    settings = Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk"), openai_base_url=f"{upstream_url}/v1")
    http = httpx.AsyncClient(base_url=persistence_app.url, headers={"x-api-key": PERSISTENCE_KEY})
    upstreams = Upstreams.build(settings)
    try:
        yield Answers(settings, PersistenceClient(http, attempts=2, initial_wait=0, max_wait=0), upstreams)
    finally:
        await http.aclose()
        await upstreams.close()


async def _orphan(persistence: httpx.AsyncClient) -> uuid.UUID:
    """An answer in progress whose gateway died: its lease has run out."""
    session = (await persistence.post("/sessions", json={"user_id": "u1", "title": "Chat"})).json()
    messages = f"/sessions/{session['id']}/messages"
    await persistence.post(messages, json={"role": "user", "content": "Where is Lyon?"})
    answer = (await persistence.post(messages, json={"role": "assistant", "content": ""})).json()
    claimed = await persistence.post(f"/messages/{answer['id']}/claim", json={"owner": "dead", "lease_seconds": 0.001})
    assert claimed.json()["status"] == "in_progress"
    return uuid.UUID(answer["id"])


async def test_an_orphan_cancelled_after_a_scan_saw_it_is_not_generated_again(
    persistence_app: LocalService,
    fake_openai: FastAPI,
    fake_openai_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The interleaving a cancelled response was seen to lose, replayed: a scan lists the orphan in progress, the
    answer is cancelled, then the scan claims it. That claim used to take it (a failed answer may be resumed) and
    generate it again; a scan's claim now takes only the answer it saw (If-Match), so it stays cancelled."""
    async with _answers(persistence_app, fake_openai_url) as answers:
        answer_id = await _orphan(answers.persistence.http)
        listed = answers.persistence.messages.stale

        async def listed_then_cancelled(owner: str, limit: int = 50) -> list[MessageDetail]:
            found = await listed(owner, limit)
            assert [answer.id for answer in found] == [answer_id]
            assert (await answers.cancel(found[0].id)).error == "cancelled"
            return found

        monkeypatch.setattr(answers.persistence.messages, "stale", listed_then_cancelled)
        assert await Recovery(answers).scan_once() == 0
        stored = await answers.persistence.messages.get(answer_id)
    assert (stored.status, stored.error, stored.attempts) == ("failed", "cancelled", 1)
    assert fake_openai.state.requests == []
