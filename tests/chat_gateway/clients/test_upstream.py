import asyncio
import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import SecretStr

from chat_gateway.clients.retry import is_transient
from chat_gateway.clients.upstream import create_client, open_stream, options_to_continue, read_chunks
from chat_gateway.config import Settings
from testing.chunks import tokens
from testing.upstream import TEXT, Plan, create_fake_openai
from tests.chat_gateway.conftest import wait_for
from tests.conftest import serve

REQUEST = httpx.Request("POST", "http://upstream.test/v1/chat/completions")


def _status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx.Response(status, headers=headers, request=REQUEST)
    return openai.APIStatusError("error", response=response, body=None)  # type: ignore[arg-type]


def test_a_continuation_keeps_the_options_with_token_limits_lowered_by_the_partial_answer() -> None:
    options = {"temperature": 0.2, "max_tokens": 100, "max_completion_tokens": 50, "stop": ["\n"]}
    assert options_to_continue(options, "") == options
    assert options_to_continue(options, "x" * 41) == options | {"max_tokens": 89, "max_completion_tokens": 39}
    assert options_to_continue({"max_tokens": 100}, "x" * 400) is None  # used up: the answer ends there
    assert options_to_continue({"seed": 1}, "x" * 4000) == {"seed": 1}
    assert options == {"temperature": 0.2, "max_tokens": 100, "max_completion_tokens": 50, "stop": ["\n"]}


@pytest.fixture(scope="module")
def dropping_upstream() -> Iterator[FastAPI]:
    app = create_fake_openai()
    with serve(app) as url:
        app.state.url = f"{url}/v1"
        yield app


@pytest.mark.anyio
@pytest.mark.parametrize(("drop_after", "words"), [(1, 1), (30, 1), (500, 20)])
async def test_what_arrived_before_a_connection_broke_is_read_before_the_failure(
    dropping_upstream: FastAPI, drop_after: int, words: int
) -> None:
    """Read only once the stream has broken off: every word sent before is there, then a transient error."""
    dropping_upstream.state.text = TEXT * words
    dropping_upstream.state.plans.append(Plan(drop_after=drop_after))
    settings = Settings(
        api_key=SecretStr("k"), openai_api_key=SecretStr("sk"), openai_base_url=dropping_upstream.state.url
    )
    client = create_client(settings)
    assert client is not None
    try:
        stream = await open_stream(client, "m", [{"role": "user", "content": "hi"}])
        state = dropping_upstream.state  # until the upstream has sent its words and broken the connection:
        await asyncio.to_thread(wait_for, lambda: state.exchanges[-1].tokens >= drop_after and not state.open_streams)
        received: list[str] = []

        async def read_all() -> None:
            async for chunk in read_chunks(stream):
                received.append(chunk.text)

        with pytest.raises(openai.APIConnectionError) as failure:
            await read_all()
    finally:
        await client.close()
    assert "".join(received) == "".join(tokens(TEXT * words)[:drop_after])
    assert is_transient(failure.value)


@pytest.mark.anyio
async def test_an_error_sent_in_the_stream_is_raised_as_the_sdk_raises_it_after_the_text_before_it() -> None:
    """The relay reads chunks through its own loop over the SDK's events (``_Chunks``): a chunk that carries an
    error is still the SDK's ``APIError`` with the upstream's message, not a chunk without text."""
    app = FastAPI()
    text = {"choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}], "model": "m"}
    error = {"error": {"message": "the model is overloaded", "type": "server_error"}}

    @app.post("/v1/chat/completions")
    async def completions() -> StreamingResponse:
        events = [f"data: {json.dumps(text)}\n\n", f"data: {json.dumps(error)}\n\n"]
        return StreamingResponse(iter(events), media_type="text/event-stream")

    received: list[str] = []
    with serve(app) as url:
        settings = Settings(api_key=SecretStr("k"), openai_api_key=SecretStr("sk"), openai_base_url=f"{url}/v1")
        client = create_client(settings)
        assert client is not None

        async def read_all() -> None:
            async for chunk in read_chunks(await open_stream(client, "m", [{"role": "user", "content": "hi"}])):
                received.append(chunk.text)

        try:
            with pytest.raises(openai.APIError) as failure:
                await read_all()
        finally:
            await client.close()
    assert received == ["Hello"]
    assert type(failure.value) is openai.APIError
    assert failure.value.message == "the model is overloaded"
    assert failure.value.body == error["error"]
