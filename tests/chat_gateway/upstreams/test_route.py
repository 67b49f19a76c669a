import asyncio
import time

import openai
import pytest
from prometheus_client import REGISTRY

from chat_gateway.clients.retry import StreamInterrupted
from chat_gateway.upstreams.breaker import Breaker, BreakerState
from chat_gateway.upstreams.route import UNAVAILABLE_POLL_SECONDS, AllBusy, Candidate, CoolingDown, Route
from chat_gateway.upstreams.upstream import Upstream
from shared import ErrorCode, ServiceUnavailable, TooManyRequests
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
        async for _ in stream:  # read to its end: a finished stream is the success a breaker counts
            pass
        route.finished()
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
@pytest.mark.serial  # a time limit of its own: make test runs it alone
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


@pytest.mark.serial  # a time limit of its own: make test runs it alone
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


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _with_clock(upstream: Upstream, clock: _Clock) -> Upstream:
    upstream.breaker = Breaker(upstream.config.failure_threshold, upstream.config.cooldown_seconds, clock)
    return upstream


def _cooling(fake: Fake, name: str, clock: _Clock) -> Upstream:
    """An upstream whose breaker one failure opened, for 10 s of ``clock``."""
    upstream = _with_clock(fake.upstream(name, ["m"], failure_threshold=1, cooldown_seconds=10), clock)
    upstream.failed()
    return upstream


async def test_streams_that_open_and_then_break_off_open_the_breaker(fakes: list[Fake]) -> None:
    """Each stream opens at once and dies mid-answer: failures in a row, however fast the upstream opens them."""
    a, b, _ = fakes
    clock = _Clock()
    dying = _with_clock(a.upstream("a", ["m"], failure_threshold=2, cooldown_seconds=10), clock)
    for _ in range(2):
        route = Route("m", [Candidate(dying, "m")])
        await (await route.open(_request)).close()
        assert dying.breaker.state == BreakerState.CLOSED  # opened: not a success yet
        route.failed(StreamInterrupted("broke off"))
        route.release()
    assert dying.breaker.state == BreakerState.OPEN
    route = Route("m", [Candidate(dying, "m"), Candidate(b.upstream("b", ["m"]), "m")])
    await _open_falling_back(route)
    assert route.describe() == "m on b"  # skipped while it cools down


async def test_a_probe_closes_the_breaker_only_once_its_stream_finished(fakes: list[Fake]) -> None:
    a, b, _ = fakes
    clock = _Clock()
    flaky = _with_clock(a.upstream("a", ["m"], failure_threshold=1, cooldown_seconds=10), clock)
    spare = b.upstream("b", ["m"])
    flaky.failed()
    clock.now += 10
    probe = Route("m", [Candidate(flaky, "m")])
    stream = await probe.open(_request)
    assert flaky.breaker.state == BreakerState.HALF_OPEN  # opened, but the stream may yet break off
    other = Route("m", [Candidate(flaky, "m"), Candidate(spare, "m")])
    await _open_falling_back(other)
    assert other.describe() == "m on b"  # one probe at a time
    async for _ in stream:
        pass
    probe.finished()
    probe.release()
    assert flaky.health().state == BreakerState.CLOSED


async def test_a_probe_that_breaks_off_opens_it_again_and_one_left_undecided_lets_the_next_probe(
    fakes: list[Fake],
) -> None:
    a, _, _ = fakes
    clock = _Clock()
    flaky = _cooling(a, "a", clock)
    clock.now += 10
    broken = Route("m", [Candidate(flaky, "m")])
    await (await broken.open(_request)).close()
    broken.failed(StreamInterrupted("broke off"))
    broken.release()
    assert (flaky.breaker.state, flaky.breaker.retry_in()) == (BreakerState.OPEN, 10)
    assert REGISTRY.get_sample_value("chat_upstream_breaker_open", {"upstream": "a"}) == 1
    clock.now += 10
    cancelled = Route("m", [Candidate(flaky, "m")])
    await (await cancelled.open(_request)).close()
    cancelled.release()  # its answer was cancelled: no verdict on the upstream
    assert (flaky.breaker.state, flaky.breaker.retry_in()) == (BreakerState.OPEN, 0)
    assert REGISTRY.get_sample_value("chat_upstream_breaker_open", {"upstream": "a"}) == 0  # it skips it no more
    await _open_falling_back(Route("m", [Candidate(flaky, "m")]))  # the next request probes at once
    assert flaky.breaker.state == BreakerState.CLOSED


async def test_a_chat_every_candidate_of_which_cools_down_is_refused_with_the_wait_to_the_first_probe(
    fakes: list[Fake],
) -> None:
    a, b, _ = fakes
    clock = _Clock()
    first = _cooling(a, "a", clock)
    route = Route("m", [Candidate(first, "m"), Candidate(b.upstream("b", ["m"]), "m")])
    route.admit()  # b takes it
    clock.now += 5.5
    route.candidates[1].upstream.breaker = _cooling(b, "b", clock).breaker
    with pytest.raises(ServiceUnavailable) as refused:
        route.admit()
    assert refused.value.code == ErrorCode.UPSTREAM_COOLING_DOWN
    assert refused.value.headers == {"Retry-After": "5"}  # a's probe, in 4.5 s
    with pytest.raises(CoolingDown) as cooling:
        await route.open(_request)
    assert cooling.value.retry_in == 4.5


async def test_an_answer_no_candidate_can_take_waits_within_its_budget(fakes: list[Fake]) -> None:
    route = Route("m", [Candidate(fakes[0].upstream("a", ["m"]), "m")])
    assert not await route.wait(CoolingDown("cooling", 30), budget_seconds=10)  # past its deadline: it fails
    began = time.monotonic()
    assert await route.wait(AllBusy("full", 0), budget_seconds=10)  # asked again shortly
    assert time.monotonic() - began >= UNAVAILABLE_POLL_SECONDS


async def test_past_the_last_candidate_an_answer_waits_only_while_every_breaker_is_open(fakes: list[Fake]) -> None:
    a, b, _ = fakes
    clock = _Clock()
    route = Route("m", [Candidate(_cooling(a, "a", clock), "m"), Candidate(b.upstream("b", ["m"]), "m")])
    broke = StreamInterrupted("broke off")
    assert route.cooling(broke) is None  # b is not cooling down: the answer fails
    clock.now += 3
    route.candidates[1].upstream.breaker = _cooling(b, "b", clock).breaker
    cooling = route.cooling(broke)
    assert cooling is not None
    assert (cooling.retry_in, route.describe()) == (7, "m on a")  # a's probe first
    assert route.cooling(ValueError("not passing")) is None
