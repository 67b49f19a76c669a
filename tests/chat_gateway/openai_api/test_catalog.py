"""GET /v1/models and the model a reply names, as the official SDK reads them."""

import httpx
import openai
import pytest
from fastapi import FastAPI

from testing.upstream import TEXT
from tests.chat_gateway.conftest import LocalService


def _sdk(gateway: LocalService) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def test_the_upstreams_models_are_listed_and_cached(gateway: LocalService, fake_openai: FastAPI) -> None:
    fake_openai.state.models = ["fake-model", "org/other-model"]
    sdk = _sdk(gateway)
    assert [model.id for model in sdk.models.list()] == ["fake-model", "org/other-model"]
    assert sdk.models.retrieve("org/other-model").owned_by == "fake"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")
    fake_openai.state.models = ["changed"]  # within the cache's minute: still the list as it was
    assert [model.id for model in sdk.models.list()] == ["fake-model", "org/other-model"]


def test_an_upstream_without_a_list_has_the_default_model(gateway: LocalService, fake_openai: FastAPI) -> None:
    assert [model.id for model in _sdk(gateway).models.list()] == ["fake-model"]
    missing = httpx.get(f"{gateway.url}/v1/models/gpt-9", timeout=30)
    assert (missing.status_code, missing.json()["error"]["type"]) == (404, "not_found_error")


def test_streamed_and_whole_replies_name_the_model_alike(gateway: LocalService, fake_openai: FastAPI) -> None:
    sdk = _sdk(gateway)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    whole = sdk.chat.completions.create(model="fake", messages=messages)
    streamed = {chunk.model for chunk in sdk.chat.completions.create(model="fake", messages=messages, stream=True)}
    assert (whole.model, streamed) == ("fake", {"fake"})


def test_logprobs_are_relayed_with_the_text_streamed_and_whole(gateway: LocalService, store: httpx.Client) -> None:
    sdk = _sdk(gateway)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    tokens: list[str] = []
    text = ""
    for chunk in sdk.chat.completions.create(
        model="fake-model", messages=messages, stream=True, logprobs=True, top_logprobs=2
    ):
        text += chunk.choices[0].delta.content or ""
        if chunk.choices[0].logprobs is not None:
            tokens += [entry.token for entry in chunk.choices[0].logprobs.content or []]
    assert "".join(tokens) == text == TEXT
    whole = sdk.chat.completions.create(model="fake-model", messages=messages, logprobs=True)
    assert whole.choices[0].logprobs is not None
    assert "".join(entry.token for entry in whole.choices[0].logprobs.content or []) == TEXT
    # Relayed, not stored: the answer keeps only that they were asked for, for a continuation.
    answer = store.get(f"/messages/{whole.id.removeprefix('chatcmpl-')}").json()
    assert answer["options"] == {"logprobs": True}
    assert "logprobs" not in answer
