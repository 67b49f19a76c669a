import asyncio
import time

import openai
import pytest

from chat_gateway.upstreams.breaker import BreakerState
from chat_gateway.upstreams.route import Candidate, CoolingDown, Route
from chat_gateway.upstreams.upstream import Upstream
from shared import ErrorCode, TooManyRequests
from testing.upstream import Plan
from tests.chat_gateway.upstreams.conftest import NOWHERE, Fake

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clients_closed")]

PROMPT = [{"role": "user", "content": "Where is Lyon?"}]


def _request(candidate: Candidate) -> tuple[list, dict]:
    return PROMPT, {}


async def _open_falling_back(route: Route) -> None:
    """Open a stream as a generation does before its first word: on a passing failure, the next candidate."""
    while True:
        try:
            stream = await route.open(_request)
        except Exception as exc:
            route.failed(exc)
            if not await route.fall_back(exc):
                raise
            continue
        await stream.close()
        route.release()
        return


@pytest.mark.parametrize(
    ("plan", "failure"),
    [
        (Plan(status=503), "5xx"),
        (Plan(status=429), "429"),
        (Plan(stall_headers=2), "timeout"),
        (None, "connection"),
    ],
)
async def test_before_the_first_word_a_passing_failure_moves_to_the_next_at_once(
    fakes: list[Fake], plan: Plan | None, failure: str
) -> None:
    a, b, c = fakes
    first = a.upstream("a", ["m"], timeout_seconds=0.5) if plan else a.upstream("a", ["m"], base_url=NOWHERE)
    if plan is not None:
        a.app.state.plans.append(plan)
    b.app.state.plans.append(Plan(status=502))
    route = Route(
        "m", [Candidate(first, "m"), Candidate(b.upstream("b", ["m"]), "m"), Candidate(c.upstream("c", ["n"]), "n")]
    )
    began = time.monotonic()
    await _open_falling_back(route)
    assert time.monotonic() - began < 1.5  # no backoff between them
    assert route.describe() == "n on c"
    assert (b.models_asked(), c.models_asked()) == (["m"], ["n"])
    assert first.error_rate > 0
    assert route.candidates[1].upstream.error_rate > 0


async def test_past_the_last_candidate_the_error_is_raised_and_the_route_starts_again(fakes: list[Fake]) -> None:
    a, b, _ = fakes
    a.app.state.plans.append(Plan(status=500))
    b.app.state.plans.append(Plan(status=400))  # not passing: no further
    route = Route("m", [Candidate(a.upstream("a", ["m"]), "m"), Candidate(b.upstream("b", ["m"]), "m")])
    with pytest.raises(openai.BadRequestError):
        await _open_falling_back(route)
    a.app.state.plans.append(Plan(status=500))
    route = Route("m", [Candidate(a.upstream("a", ["m"]), "m")])
    with pytest.raises(openai.InternalServerError):
        await _open_falling_back(route)
    assert route.current.upstream.name == "a"


async def test_retry_after_is_respected_only_when_the_next_is_the_same_upstream(fakes: list[Fake]) -> None:
    a, b, _ = fakes
    same = a.upstream("a", ["m", "n"])
    a.app.state.plans.extend([Plan(status=429, retry_after="1"), Plan(status=429, retry_after="1")])
    began = time.monotonic()
    await _open_falling_back(Route("m", [Candidate(same, "m"), Candidate(b.upstream("b", ["m"]), "m")]))
    assert time.monotonic() - began < 0.8
    began = time.monotonic()
    await _open_falling_back(Route("m", [Candidate(same, "m"), Candidate(same, "n")]))
    assert time.monotonic() - began >= 1


async def test_a_breaker_opened_by_failures_skips_its_upstream_until_a_probe_closes_it(fakes: list[Fake]) -> None:
    a, b, _ = fakes
    flaky = a.upstream("a", ["m"], failure_threshold=2, cooldown_seconds=0.3)
    spare = b.upstream("b", ["m"])

    def route() -> Route:
        return Route("m", [Candidate(flaky, "m"), Candidate(spare, "m")])

    a.app.state.plans.extend([Plan(status=503), Plan(status=503)])
    await _open_falling_back(route())
    await _open_falling_back(route())
    assert flaky.breaker.state == BreakerState.OPEN
    await _open_falling_back(route())
    assert len(a.app.state.requests) == 2  # skipped while it cools down
    assert flaky.health().state == BreakerState.OPEN
    await asyncio.sleep(0.3)
    await _open_falling_back(route())  # the probe: it answers
    assert len(a.app.state.requests) == 3
    assert flaky.health().state == BreakerState.CLOSED


async def test_every_breaker_open_is_a_passing_failure(fakes: list[Fake]) -> None:
    upstream = fakes[0].upstream("a", ["m"], failure_threshold=1)
    upstream.failed()
    with pytest.raises(CoolingDown):
        await Route("m", [Candidate(upstream, "m")]).open(_request)


async def test_a_full_limit_refuses_a_chat_with_retry_after_and_the_next_candidate_takes_it(fakes: list[Fake]) -> None:
    a, b, _ = fakes
    busy: Upstream = a.upstream("a", ["m"], max_concurrency=1, queue_seconds=3)
    holder = Route("m", [Candidate(busy, "m")])
    await holder.open(_request)  # holds its one stream
    with pytest.raises(TooManyRequests) as refused:
        Route("m", [Candidate(busy, "m")]).admit()
    assert refused.value.code == ErrorCode.UPSTREAM_BUSY
    assert refused.value.headers == {"Retry-After": "3"}
    other = Route("m", [Candidate(busy, "m"), Candidate(b.upstream("b", ["m"]), "m")])
    other.admit()
    await other.open(_request)
    assert other.describe() == "m on b"
    other.release()
    holder.release()
    assert busy.limit.in_use == 0
