"""Races through a real server: threads send the requests at the same moment."""

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.persistence.conftest import API_KEY, append, claim, new_answer, new_session, random_id


def _race(live_url: str, count: int, request: Callable[[httpx.Client, int], httpx.Response]) -> list[httpx.Response]:
    """Run ``count`` requests on separate connections, released together by a barrier."""
    barrier = threading.Barrier(count)

    def one(index: int) -> httpx.Response:
        with httpx.Client(base_url=live_url, headers={"x-api-key": API_KEY}, timeout=60) as http:
            http.get("/health")  # open the connection before the start line
            barrier.wait(timeout=30)
            return request(http, index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def test_concurrent_appends_at_one_offset_exactly_one_wins(live: httpx.Client, live_url: str) -> None:
    answer = new_answer(live)
    claim(live, answer["id"])
    append(live, answer["id"], 0, "Start. ")
    responses = _race(live_url, 20, lambda http, i: append(http, answer["id"], 7, f"[writer {i}]"))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 409: 19}, statuses
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    assert {r.json()["length"] for r in responses if r.status_code == 409} <= {7, len(f"Start. [writer {winner}]")}
    assert live.get(f"/messages/{answer['id']}").json()["content"] == f"Start. [writer {winner}]"


def test_concurrent_appends_in_sequence_lose_nothing(live: httpx.Client, live_url: str) -> None:
    """Writers that retry on 409 from the length they are told end with every piece stored once."""
    answer = new_answer(live)
    claim(live, answer["id"])

    def writer(http: httpx.Client, index: int) -> httpx.Response:
        piece, offset = f"<{index}>", 0
        for _ in range(200):
            response: httpx.Response = append(http, answer["id"], offset, piece)
            if response.status_code == 200:
                return response
            offset = response.json()["length"]
        raise AssertionError("writer starved")

    responses = _race(live_url, 10, writer)
    assert all(r.status_code == 200 for r in responses)
    content = live.get(f"/messages/{answer['id']}").json()["content"]
    assert sorted(content.replace(">", ">\n").split()) == sorted(f"<{i}>" for i in range(10))


def test_concurrent_appends_naming_their_models_record_each_part_where_its_text_is(
    live: httpx.Client, live_url: str
) -> None:
    answer = new_answer(live)
    claim(live, answer["id"])

    def writer(http: httpx.Client, index: int) -> httpx.Response:
        piece, offset = f"<{index}>", 0
        for _ in range(200):
            response: httpx.Response = append(http, answer["id"], offset, piece, model=f"m{index}")
            if response.status_code == 200:
                return response
            offset = response.json()["length"]
        raise AssertionError("writer starved")

    assert all(r.status_code == 200 for r in _race(live_url, 8, writer))
    message = live.get(f"/messages/{answer['id']}").json()
    parts = message["answer_parts"]
    assert len(parts) == 8
    for part in parts:
        assert message["content"][part["offset"] :].startswith(f"<{part['model'][1:]}>")


def test_concurrent_claims_have_exactly_one_owner(live: httpx.Client, live_url: str) -> None:
    answer = new_answer(live)
    responses = _race(live_url, 10, lambda http, i: claim(http, answer["id"], owner=f"gateway-{i}"))
    winners = [r.json()["lease_owner"] for r in responses if r.status_code == 200]
    assert len(winners) == 1
    assert Counter(r.status_code for r in responses) == {200: 1, 409: 9}
    stored = live.get(f"/messages/{answer['id']}").json()
    assert (stored["lease_owner"], stored["attempts"]) == (winners[0], 1)


def test_concurrent_idempotent_creates_store_one_message(live: httpx.Client, live_url: str) -> None:
    session = new_session(live)
    body = {"id": random_id(), "role": "user", "content": "once"}
    responses = _race(live_url, 8, lambda http, i: http.post(f"/sessions/{session['id']}/messages", json=body))
    assert Counter(r.status_code for r in responses) == {201: 1, 200: 7}
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(live.get(f"/sessions/{session['id']}/messages").json()["items"]) == 1


def test_concurrent_toggles_are_not_lost(live: httpx.Client, live_url: str) -> None:
    session = new_session(live)
    responses = _race(live_url, 6, lambda http, i: http.patch(f"/sessions/{session['id']}/favorite"))
    assert all(r.status_code == 200 for r in responses)
    assert live.get(f"/sessions/{session['id']}").json()["is_favorite"] is False


def test_a_write_is_visible_to_the_next_read(live: httpx.Client) -> None:
    """Read-your-writes: the commit happens before the response is sent."""
    session = new_session(live)
    for i in range(20):
        message = live.post(f"/sessions/{session['id']}/messages", json={"role": "user", "content": str(i)}).json()
        assert live.get(f"/messages/{message['id']}").status_code == 200
    answer = new_answer(live)
    claim(live, answer["id"])
    for i in range(20):
        assert append(live, answer["id"], i, "x").status_code == 200
        assert len(live.get(f"/messages/{answer['id']}").json()["content"]) == i + 1
