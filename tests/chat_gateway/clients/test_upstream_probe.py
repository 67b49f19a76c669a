import asyncio
import logging
import time

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from chat_gateway.clients.upstream_probe import ContinuationChoice, choose_continuation
from chat_gateway.config import ContinuationMethod, Settings
from chat_gateway.main import create_app
from testing.upstream import MODEL, create_fake_openai

pytestmark = pytest.mark.anyio

BASE = "http://llm.internal:8000/v1"


def _settings(base_url: str | None = BASE, **overrides: object) -> Settings:
    fields = {"api_key": "k", "openai_api_key": "sk-upstream", "openai_base_url": base_url}
    return Settings.model_validate(fields | overrides)


def _fake(server: str | None) -> httpx.ASGITransport:
    """The fake upstream saying it is ``server`` (testing/upstream.py: the routes those servers answer)."""
    fake = create_fake_openai()
    fake.state.server, fake.state.models = server, [MODEL]
    return httpx.ASGITransport(app=fake)


class _NotAsked(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"{request.url} was asked, though the answer was known without asking")


async def test_vllm_is_known_by_its_version_and_its_models() -> None:
    choice = await choose_continuation(_settings(), _fake("vllm"))
    assert choice == ContinuationChoice("vllm", "vLLM 0.0.0-fake at /version")


async def test_llama_server_is_known_by_its_props_and_server_header() -> None:
    choice = await choose_continuation(_settings(), _fake("llama.cpp"))
    assert choice == ContinuationChoice("exact", "llama.cpp's llama-server b0-fake at /props")


async def test_an_upstream_that_says_nothing_gets_restart() -> None:
    assert await choose_continuation(_settings(), _fake(None)) == ContinuationChoice("restart", "unknown upstream")


@respx.mock
async def test_llama_cpp_pythons_server_is_not_taken_for_llama_server() -> None:
    """It has no /props and says ``server: uvicorn``, as any Python server does: no proof of anything. Its gemma
    chat format closes the assistant turn (issue 37), so `exact` would glue a fresh answer to the cut text."""
    uvicorn = {"server": "uvicorn"}
    respx.get("http://llm.internal:8000/version").respond(404, json={"detail": "Not Found"}, headers=uvicorn)
    respx.get("http://llm.internal:8000/props").respond(404, json={"detail": "Not Found"}, headers=uvicorn)
    choice = await choose_continuation(_settings())
    assert choice == ContinuationChoice("restart", "unknown upstream (server: uvicorn)")


@respx.mock
async def test_a_version_of_its_own_or_props_without_llama_cpps_header_prove_nothing() -> None:
    """Other servers answer {"version": ...} too (Ollama shims, proxies); only vLLM's own models make it vLLM."""
    respx.get("http://llm.internal:8000/version").respond(json={"version": "1.2.3"})
    respx.get(f"{BASE}/models").respond(json={"object": "list", "data": [{"id": "m", "owned_by": "shim"}]})
    respx.get("http://llm.internal:8000/props").respond(json={"default_generation_settings": {}})
    assert (await choose_continuation(_settings())).method == "restart"


@respx.mock
async def test_the_probes_carry_the_upstream_key() -> None:
    """vLLM started with --api-key guards /v1/models: its proof needs the key."""
    respx.get("http://llm.internal:8000/version").respond(json={"version": "0.9.1"})
    models = respx.get(f"{BASE}/models").respond(json={"data": [{"id": "m", "owned_by": "vllm"}]})
    respx.get("http://llm.internal:8000/props").respond(404)
    assert await choose_continuation(_settings()) == ContinuationChoice("vllm", "vLLM 0.9.1 at /version")
    assert models.calls.last.request.headers["authorization"] == "Bearer sk-upstream"


async def test_an_upstream_down_at_start_up_gets_restart_at_once() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    choice = await choose_continuation(_settings(), httpx.MockTransport(refuse))
    expected = "the upstream at http://llm.internal:8000 was unreachable at start-up"
    assert choice == ContinuationChoice("restart", expected)


@pytest.mark.serial  # a time limit of its own: make test runs it alone
async def test_an_upstream_that_does_not_answer_holds_start_up_no_longer_than_the_probe_time() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    started = time.monotonic()
    choice = await choose_continuation(_settings(upstream_probe_seconds=0.2), httpx.MockTransport(hang))
    assert time.monotonic() - started < 2
    assert choice == ContinuationChoice("restart", "the upstream did not say what it is within 0.2 s")


@pytest.mark.parametrize(
    ("base_url", "method"),
    [
        (None, "restart"),  # OpenAI's own API: it answers with a new message
        ("https://api.openai.com/v1", "restart"),
        ("https://api.mistral.ai/v1", "prefix"),
        ("https://api.deepseek.com/beta", "prefix"),
        ("https://api.deepseek.com", "restart"),  # prefix completion is DeepSeek's beta only
    ],
)
async def test_the_hosted_apis_are_known_by_their_host_without_asking(base_url: str | None, method: str) -> None:
    assert (await choose_continuation(_settings(base_url), _NotAsked())).method == method


@pytest.mark.parametrize("method", ["exact", "vllm", "prefix", "restart"])
async def test_a_configured_method_is_taken_without_asking(method: ContinuationMethod) -> None:
    choice = await choose_continuation(_settings(upstream_continuation=method), _NotAsked())
    assert choice == ContinuationChoice(method, "configured")


async def test_the_choice_is_said_in_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="chat_gateway.clients.upstream_probe"):
        await choose_continuation(_settings(), _fake("vllm"))
    said = [r.getMessage() for r in caplog.records if r.name == "chat_gateway.clients.upstream_probe"]
    assert said == ["upstream default continuation vllm: vLLM 0.0.0-fake at /version"]


@pytest.mark.serial  # a time limit of its own: make test runs it alone
def test_the_gateway_decides_once_at_start_up_and_keeps_it() -> None:
    """Nothing listens at the upstream's address: start-up goes on at once, with restart, kept for every answer."""
    settings = _settings("http://127.0.0.1:1/v1", api_base_url="http://127.0.0.1:1", recovery_interval_seconds=3600)
    app = create_app(settings)
    started = time.monotonic()
    with TestClient(app):
        assert time.monotonic() - started < 5
        assert app.state.upstreams.by_name["default"].continuation == "restart"
