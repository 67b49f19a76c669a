"""The app's own wiring: its client of persistence."""

from pathlib import Path

import httpx
import pytest

from chat_gateway.config import Settings
from chat_gateway.main import _persistence_client
from tests.chat_gateway.conftest import gateway_env, settings_from

pytestmark = pytest.mark.anyio


async def test_the_client_of_persistence_keeps_no_cookie_a_reply_sets(tmp_path: Path) -> None:
    """Persistence sets none; the client does not look for them in its replies (docs/benchmarks.md)."""
    cookies_sent = []

    def persistence(request: httpx.Request) -> httpx.Response:
        cookies_sent.append(request.headers.get("cookie"))
        return httpx.Response(200, json={"status": "ok"}, headers={"set-cookie": "session=abc; Path=/"})

    settings = settings_from(Settings, gateway_env(tmp_path, "http://persistence.test", None))
    client = _persistence_client(settings, httpx.MockTransport(persistence))
    async with client.http:
        assert await client.ready()
        assert await client.ready()
    assert cookies_sent == [None, None]
    assert not client.http.cookies
