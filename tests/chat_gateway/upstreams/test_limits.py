import asyncio

import pytest

from chat_gateway.upstreams.limits import Limit, LimitReached
from shared import ErrorCode

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
    assert not limit.has_room()
    refusal = limit.refusal()  # what a new chat gets
    assert (refusal.status_code, refusal.code, refusal.headers) == (429, ErrorCode.UPSTREAM_BUSY, {"Retry-After": "1"})
    with pytest.raises(LimitReached, match="queue full"):
        await limit.acquire()
    with pytest.raises(LimitReached, match=r"within 0\.05 s"):
        await waiting  # waited its time
    assert (limit.in_use, limit.waiting, limit.has_room()) == (1, 0, True)


async def test_without_a_limit_nothing_is_counted() -> None:
    limit = Limit("a", streams=None, queue=0, wait_seconds=0)
    for _ in range(1000):
        await limit.acquire()
    assert limit.has_room()
    assert limit.in_use == 0
