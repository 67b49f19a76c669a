from chat_gateway.upstreams.breaker import Breaker, BreakerState


def _state(breaker: Breaker) -> BreakerState:
    return breaker.state


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failures_in_a_row_open_it_and_a_probe_after_the_cool_down_closes_it() -> None:
    clock = _Clock()
    breaker = Breaker(threshold=3, cooldown_seconds=10, clock=clock)
    breaker.failed()
    breaker.failed()
    breaker.succeeded()  # not in a row: counted again from none
    for _ in range(3):
        assert breaker.allow()
        breaker.failed()
    assert breaker.state == BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.skips()
    assert breaker.retry_in() == 10
    clock.now += 10
    assert breaker.allow()  # the probe
    assert _state(breaker) == BreakerState.HALF_OPEN
    assert not breaker.allow()  # one probe at a time
    breaker.succeeded()
    assert _state(breaker) == BreakerState.CLOSED
    assert breaker.allow()


def test_a_failed_probe_opens_it_for_another_cool_down() -> None:
    clock = _Clock()
    breaker = Breaker(threshold=1, cooldown_seconds=5, clock=clock)
    breaker.failed()
    clock.now += 5
    assert breaker.allow()
    breaker.failed()
    assert breaker.state == BreakerState.OPEN
    assert breaker.retry_in() == 5


def test_without_a_threshold_it_never_opens() -> None:
    breaker = Breaker(threshold=None, cooldown_seconds=5)
    for _ in range(100):
        breaker.failed()
    assert breaker.state == BreakerState.CLOSED
    assert breaker.allow()
