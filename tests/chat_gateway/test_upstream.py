import asyncio
import email.utils
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from tenacity import RetryCallState

from chat_gateway.config import Settings
from chat_gateway.upstream import (
    StreamInterrupted,
    create_client,
    is_transient,
    open_stream,
    options_to_continue,
    read_chunks,
    retry_after_seconds,
    wait_retry_after,
)
from tests.conftest import serve
from tests.fake_openai import TEXT, Plan, create_fake_openai, tokens

REQUEST = httpx.Request("POST", "http://upstream.test/v1/chat/completions")


def _status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    response = httpx.Response(status, headers=headers, request=REQUEST)
    return openai.APIStatusError("error", response=response, body=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 529])
def test_transient_statuses_are_retried(status: int) -> None:
    assert is_transient(_status_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    assert not is_transient(_status_error(status))


def test_connection_trouble_and_interrupted_streams_are_retried() -> None:
    assert is_transient(openai.APIConnectionError(request=REQUEST))  # type: ignore[arg-type]
    assert is_transient(openai.APITimeoutError(request=REQUEST))  # type: ignore[arg-type]
    assert is_transient(StreamInterrupted())
    assert not is_transient(ValueError())


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds(_status_error(429, {"retry-after": "7"})) == 7
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= (retry_after_seconds(_status_error(429, {"retry-after": in_ten})) or 0) <= 10
    assert retry_after_seconds(_status_error(429)) is None
    assert retry_after_seconds(ValueError()) is None


def _state_failing_with(exc: BaseException) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.set_exception((type(exc), exc, None))
    return state


def test_wait_honours_retry_after_up_to_the_cap() -> None:
    wait = wait_retry_after(fallback=lambda state: 0.25, cap=5)  # type: ignore[arg-type]
    assert wait(_state_failing_with(_status_error(429, {"retry-after": "2"}))) == 2
    assert wait(_state_failing_with(_status_error(429, {"retry-after": "120"}))) == 5
    assert wait(_state_failing_with(_status_error(500))) == 0.25


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
        await asyncio.sleep(0.3)  # the upstream has sent its words and broken the connection
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
