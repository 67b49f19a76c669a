import asyncio

import pytest

from chat_gateway.upstreams.limits import Limit
from shared import ErrorCode, TooManyRequests

pytestmark = pytest.mark.anyio


async def test_past_its_streams_a_request_waits_in_the_queue_for_a_place() -> None:
    limit = Limit("a", streams=1, queue=1, wait_seconds=5)
    await limit.acquire()
    waiting = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0.01)
    assert (limit.in_use, limit.waiting, limit.has_room()) == (1, 1, False)
    limit.release()
    await waiting
    assert (limit.in_use, limit.waiting) == (1, 0)


async def test_past_its_queue_or_its_wait_a_request_is_refused_with_retry_after() -> None:
    limit = Limit("a", streams=1, queue=1, wait_seconds=0.05)
    await limit.acquire()
    waiting = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0.01)
    with pytest.raises(TooManyRequests) as refused:
        await limit.acquire()  # the queue is full
    assert refused.value.code == ErrorCode.UPSTREAM_BUSY
    assert refused.value.headers == {"Retry-After": "1"}
    with pytest.raises(TooManyRequests):
        await waiting  # waited its time
    assert (limit.in_use, limit.waiting, limit.has_room()) == (1, 0, True)


async def test_without_a_limit_nothing_is_counted() -> None:
    limit = Limit("a", streams=None, queue=0, wait_seconds=0)
    for _ in range(1000):
        await limit.acquire()
    assert limit.has_room()
    assert limit.in_use == 0
