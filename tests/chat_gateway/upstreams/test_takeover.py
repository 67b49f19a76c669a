"""A gateway killed once its answer went on on the fallback (issue 39): another gateway takes the answer over and
finishes it on the model of its last part, from the saved text; the stored answer is the first model's part then the
second's, and a client that reconnects to the other gateway holds exactly the stored text. Unpaced fakes,
deterministic and sampling, on both databases."""

import contextlib
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testing.processes import Service
from testing.upstream import Plan
from tests.chat_gateway.conftest import Event, read_finished, read_message, sse_events, wait_for
from tests.chat_gateway.upstreams.conftest import Fake, routed_gateway
from tests.chat_gateway.upstreams.test_midanswer import BROKEN, QUESTION, UPSTREAMS, _sent

pytestmark = pytest.mark.slow  # starts and kills processes: left out of `make test-fast`


@pytest.fixture(scope="module")
def persistence(persistence_on_both: Service) -> Service:
    return persistence_on_both


@pytest.fixture(params=[False, True], ids=["deterministic", "sampling"])
def sampling(request: pytest.FixtureRequest, fakes: list[Fake]) -> bool:
    for fake in fakes:
        fake.app.state.sample = request.param
    return bool(request.param)


@contextlib.contextmanager
def _gateways(tmp: Path, persistence: Service, fakes: list[Fake]) -> Iterator[tuple[Service, Service]]:
    """Two gateways with test_midanswer's upstreams file: a's two attempts at an answer spent, it goes on on c."""
    a, _, c = fakes
    upstreams = UPSTREAMS.format(a=a.url, c=c.url)
    (tmp / "first").mkdir()
    (tmp / "second").mkdir()
    with (
        routed_gateway(tmp / "first", persistence, upstreams, RETRY_ATTEMPTS="2") as first,
        routed_gateway(tmp / "second", persistence, upstreams, RETRY_ATTEMPTS="2") as second,
    ):
        yield first, second


def _until_cut(events: Iterator[Event]) -> tuple[str, int]:
    """The text a client was sent before its gateway died, and the offset it reached."""
    text, offset = "", 0
    with contextlib.suppress(httpx.HTTPError):
        for event in events:
            if event.event == "delta":
                text, offset = text + event.data["text"], int(event.id or 0)
    return text, offset


@pytest.mark.usefixtures("sampling")
def test_a_gateway_killed_after_the_switch_is_finished_by_another_on_the_last_parts_model(
    tmp_path: Path, persistence: Service, fakes: list[Fake], process_store: httpx.Client
) -> None:
    a, _, c = fakes
    a.app.state.plans.extend(BROKEN)
    # c writes three words of its part, then its retry holds the answer on the first gateway until it is killed.
    c.app.state.plans.extend([Plan(drop_after=3), Plan(stall=60)])
    user = f"takeover-{uuid.uuid4().hex[:8]}"
    with _gateways(tmp_path, persistence, fakes) as (first, second):
        body = {"message": QUESTION, "stream": True, "user_id": user}
        with httpx.stream("POST", f"{first.url}/chat", json=body, timeout=30) as response:
            events = sse_events(response)
            message_id = next(events).data["message_id"]

            def switched() -> bool:
                saved = read_message(process_store, message_id)["content"]
                return len(c.app.state.exchanges) == 2 and saved == _sent(a) + c.app.state.exchanges[0].sent

            wait_for(switched)
            at_kill = read_message(process_store, message_id)
            first.kill(signal.SIGKILL)
            shown, offset = _until_cut(events)
        assert [(part["model"], part["offset"]) for part in at_kill["answer_parts"]] == [
            ("alpha", 0),
            ("gamma", len(_sent(a))),
        ]
        url = f"{second.url}/chat/messages/{message_id}/stream"
        with httpx.stream("GET", url, headers={"Last-Event-ID": str(offset)}, timeout=30) as response:
            rest = list(sse_events(response))
        final = read_finished(process_store, message_id)
    assert rest[-1].event == "done", rest[-1]
    assert final["status"] == "complete"
    boundary = len(_sent(a))
    assert [(part["model"], part["offset"]) for part in final["answer_parts"]] == [("alpha", 0), ("gamma", boundary)]
    assert (final["content"][:boundary], final["content"][boundary:]) == (_sent(a), _sent(c))
    taken_over = c.app.state.exchanges[-1]
    assert (taken_over.partial, taken_over.finished) == (at_kill["content"], True)  # from the saved text, on c
    assert len(a.app.state.exchanges) == 2  # a was not asked again: gamma's route went on
    assert shown + "".join(event.data["text"] for event in rest if event.event == "delta") == final["content"]
    rows = process_store.get("/usage", params={"user_id": user}).json()["rows"]
    assert {row["model"] for row in rows} == {"alpha", "gamma"}
