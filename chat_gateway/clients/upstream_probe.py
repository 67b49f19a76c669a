"""How the upstream continues an interrupted answer (``ContinuationMethod``, prompt.Continuation): configured, or
asked of the upstream once, at start-up, with UPSTREAM_CONTINUATION=auto.

What decides is what the upstream says it is, never its address alone, but for the hosted APIs whose host *is*
the vendor. Whatever it cannot tell gets ``restart``: it works with every upstream, while ``exact`` sent to one
that opens a new turn glues a fresh answer to the cut text. A server that merely answers like others (uvicorn's
``server`` header, a ``{"version": ...}`` of its own) proves nothing, so each proof is two of a server's own marks.
"""

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx

from chat_gateway.config import OPENAI_HOST, ContinuationMethod, Settings

logger = logging.getLogger(__name__)

# Mistral's and DeepSeek's APIs serve nothing but the vendor's own models, have no route that says what they are,
# and document the same continuation: a last assistant message marked "prefix": true. Mistral's refuses a last
# assistant message without it ("Expected last role User or Tool (or Assistant with prefix True)"), so `restart`
# would fail there outright. DeepSeek's takes it only on its beta base URL (https://api.deepseek.com/beta).
MISTRAL_HOST = "api.mistral.ai"
DEEPSEEK_HOST = "api.deepseek.com"


@dataclass(frozen=True)
class ContinuationChoice:
    method: ContinuationMethod
    reason: str  # for the start-up log


NO_UPSTREAM = ContinuationChoice("restart", "no upstream configured")


async def choose_continuation(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> ContinuationChoice:
    """The method of the single-upstream settings (OPENAI_*, UPSTREAM_CONTINUATION), and why, said in one INFO line.
    ``transport``: what the probes go through (the network)."""
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key is not None else None
    return await choose(
        settings.upstream_continuation, settings.openai_base_url, key, settings.upstream_probe_seconds, transport
    )


async def choose(
    configured: ContinuationMethod | Literal["auto"],
    base_url: str | None,
    key: str | None,
    seconds: float,
    transport: httpx.AsyncBaseTransport | None = None,
    name: str = "default",
) -> ContinuationChoice:
    """The method of the upstream ``name`` at ``base_url``: ``configured``, or asked of it within ``seconds``."""
    choice = await _choose(configured, base_url, key, seconds, transport)
    logger.info("upstream %s continuation %s: %s", name, choice.method, choice.reason)
    return choice


async def _choose(
    configured: ContinuationMethod | Literal["auto"],
    base_url: str | None,
    key: str | None,
    seconds: float,
    transport: httpx.AsyncBaseTransport | None,
) -> ContinuationChoice:
    if configured != "auto":
        return ContinuationChoice(configured, "configured")
    if (by_host := hosted_api(base_url)) is not None:
        return by_host
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(timeout=seconds, headers=headers, transport=transport) as client:
        try:
            async with asyncio.timeout(seconds):
                return await _probe(client, str(base_url))
        except TimeoutError:
            return ContinuationChoice("restart", f"the upstream did not say what it is within {seconds:g} s")


def hosted_api(base_url: str | None) -> ContinuationChoice | None:
    """The choice for an API known by its host (OpenAI's is the default base URL), else None."""
    if base_url is None:
        return ContinuationChoice("restart", "OpenAI's API, which answers with a new message")
    url = urlsplit(base_url)
    if url.hostname == OPENAI_HOST:
        return ContinuationChoice("restart", f"OpenAI's API ({OPENAI_HOST}), which answers with a new message")
    if url.hostname == MISTRAL_HOST:
        return ContinuationChoice("prefix", f"Mistral's API ({MISTRAL_HOST}), documented to continue a prefix")
    if url.hostname == DEEPSEEK_HOST:
        if url.path.startswith("/beta"):
            return ContinuationChoice("prefix", f"DeepSeek's beta API ({DEEPSEEK_HOST}/beta): prefix completion")
        return ContinuationChoice("restart", "DeepSeek's API without /beta, where its prefix completion is")
    return None


async def _probe(http: httpx.AsyncClient, base_url: str) -> ContinuationChoice:
    base = base_url.rstrip("/")
    root = base.removesuffix("/v1")  # the servers' own routes are beside the OpenAI ones, not under them
    version, props = await asyncio.gather(_get(http, f"{root}/version"), _get(http, f"{root}/props"))
    if version is None and props is None:
        return ContinuationChoice("restart", f"the upstream at {root} was unreachable at start-up")
    if (vllm := _vllm_version(version)) is not None and await _models_owned_by_vllm(http, base):
        return ContinuationChoice("vllm", f"vLLM {vllm} at /version")
    if (build := _llama_server_build(props)) is not None:
        return ContinuationChoice("exact", f"llama.cpp's llama-server{build} at /props")
    answered = [response for response in (version, props) if response is not None]
    servers = sorted({name for response in answered for name in response.headers.get_list("server")})
    said = f" (server: {', '.join(servers)})" if servers else ""
    return ContinuationChoice("restart", f"unknown upstream{said}")


async def _get(http: httpx.AsyncClient, url: str) -> httpx.Response | None:
    try:
        return await http.get(url)
    except httpx.HTTPError:
        return None


def _json(response: httpx.Response | None) -> object:
    if response is None or response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _vllm_version(response: httpx.Response | None) -> str | None:
    # vLLM's api_server: @router.get("/version") answers {"version": VLLM_VERSION}, and nothing else.
    body = _json(response)
    if isinstance(body, dict) and set(body) == {"version"} and isinstance(body["version"], str):
        return body["version"]
    return None


async def _models_owned_by_vllm(http: httpx.AsyncClient, base: str) -> bool:
    # vLLM's ModelCard: owned_by: str = "vllm", for every model it serves.
    body = _json(await _get(http, f"{base}/models"))
    models = body.get("data") if isinstance(body, dict) else None
    return bool(models) and all(isinstance(m, dict) and m.get("owned_by") == "vllm" for m in models or [])


def _llama_server_build(response: httpx.Response | None) -> str | None:
    """llama-server's build (" bNNNN..." or ""), when ``response`` is its /props: every answer of it carries
    ``Server: llama.cpp`` (its set_default_headers), and /props its ``default_generation_settings``. It continues
    a last assistant message ("if the assistant message appears at the end of list, we do not add end-of-turn
    token", its chat parameters) unless started with --no-prefill-assistant. llama-cpp-python's server has no
    /props and says ``server: uvicorn``: it is not this, and its gemma chat format does close that turn."""
    if response is None or "llama.cpp" not in response.headers.get_list("server"):
        return None
    body = _json(response)
    if not (isinstance(body, dict) and isinstance(body.get("default_generation_settings"), dict)):
        return None
    build = body.get("build_info")
    return f" {build}" if isinstance(build, str) and build else ""
