"""A lease counted on this process's clock from when the request that granted or renewed it was sent."""

import time

from chat_gateway.answers.lease import Lease


def test_a_lease_is_surely_ours_until_its_seconds_after_the_request_was_sent() -> None:
    sent = time.monotonic() - 10  # the request that granted it left 10 s ago
    lease = Lease("gateway-a", 15, granted_at=sent)
    assert (lease.deadline, lease.lapsed()) == (sent + 15, False)
    lease.renewed(sent_at=sent - 10)  # an older renewal: counted from its own sending
    assert lease.lapsed()
    lease.renewed(sent_at=time.monotonic(), seconds=0.5)  # a release's short lease
    assert not lease.lapsed()
    assert lease.deadline <= time.monotonic() + 0.5


def test_a_lease_asked_for_now_runs_from_now() -> None:
    before = time.monotonic()
    lease = Lease("gateway-a", 2)
    assert before + 2 <= lease.deadline <= time.monotonic() + 2
    assert lease.owner == "gateway-a"
