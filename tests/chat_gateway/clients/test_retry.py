"""What counts as transient, and how long a retry waits (chat_gateway/clients/retry.py)."""

import email.utils
import time

import httpx
import openai
import pytest
from tenacity import RetryCallState

from chat_gateway.clients.retry import StreamInterrupted, is_transient, retry_after_seconds, wait_retry_after

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
