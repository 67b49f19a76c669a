"""An answer finished on another model than it began with (issue 39): which model wrote which part, recorded by its
appends and its end, kept through claims, exports and imports; its tokens in the ledger under each part's model."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from persistence.services.answer_parts import after_append
from shared.resources import MAX_ANSWER_PARTS
from tests.persistence.conftest import append, claim, random_id

FIGURES = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def _answer(client: TestClient, user_id: str = "ann", **account: Any) -> str:
    body = {
        "inputs": [{"content": "hi"}],
        "owner": "g1",
        "session": {"user_id": user_id, "title": "t"},
        "answer": {"model": "a"},
        "account": {"user_id": user_id, "reserve_tokens": 4, "prompt_tokens": 3} | account,
    }
    response = client.post(f"/sessions/{random_id()}/turns", json=body)
    assert response.status_code == 201, response.text
    answer_id: str = response.json()["answer"]["id"]
    return answer_id


def _parts(client: TestClient, answer_id: str) -> list[tuple[str, int]] | None:
    message = client.get(f"/messages/{answer_id}").json()
    if "answer_parts" not in message:
        return None
    return [(part["model"], part["offset"]) for part in message["answer_parts"]]


def _finish(client: TestClient, answer_id: str, offset: int, text: str, parts: list[dict[str, Any]]) -> Any:
    finish = {"status": "complete", "parts": parts}
    return append(client, answer_id, offset, text, owner="g1", finish=finish)


def _by_model(client: TestClient, user_id: str) -> dict[str, dict[str, Any]]:
    return {row["model"]: row for row in client.get("/usage", params={"user_id": user_id}).json()["rows"]}


def test_an_append_naming_another_model_begins_a_part(client: TestClient) -> None:
    answer = _answer(client)
    assert append(client, answer, 0, "Hello ", owner="g1", model="a").status_code == 200
    assert _parts(client, answer) is None  # one model so far: nothing recorded, nothing shown
    assert append(client, answer, 6, "wor", owner="g1", model="b").status_code == 200
    assert append(client, answer, 9, "ld", owner="g1", model="b").status_code == 200
    assert append(client, answer, 11, "!", owner="g1").status_code == 200  # names no model: changes nothing
    assert _parts(client, answer) == [("a", 0), ("b", 6)]
    listed = client.get(f"/sessions/{client.get(f'/messages/{answer}').json()['session_id']}/messages").json()
    assert [m.get("answer_parts") for m in listed["items"]][-1] == [
        {"model": "a", "offset": 0, "usage": None},
        {"model": "b", "offset": 6, "usage": None},
    ]
    assert "answer_parts" not in listed["items"][0]  # the question: the payload as it always was


def test_a_replayed_append_adds_no_part_twice(client: TestClient) -> None:
    answer = _answer(client)
    append(client, answer, 0, "Hello ", owner="g1")
    assert append(client, answer, 6, "world", owner="g1", model="b").status_code == 200
    replayed = append(client, answer, 6, "world", owner="g1", model="b")
    assert replayed.status_code == 409
    assert replayed.json()["code"] == "offset_mismatch"
    assert append(client, answer, 11, "!", owner="other", model="c").json()["code"] == "lease_lost"
    assert _parts(client, answer) == [("a", 0), ("b", 6)]
    assert client.get(f"/messages/{answer}").json()["content"] == "Hello world"


def test_an_answer_passed_from_model_to_model_past_the_limit_is_refused(client: TestClient) -> None:
    answer = _answer(client)
    for offset in range(MAX_ANSWER_PARTS):
        append(client, answer, offset, "x", owner="g1", model=f"m{offset % 2}")
    refused = append(client, answer, MAX_ANSWER_PARTS, "y", owner="g1", model="c")
    assert refused.status_code == 409
    assert refused.json()["parts"] == MAX_ANSWER_PARTS
    message = client.get(f"/messages/{answer}").json()
    assert (len(message["answer_parts"]), len(message["content"])) == (MAX_ANSWER_PARTS, MAX_ANSWER_PARTS)


def test_a_claim_keeps_the_parts_and_the_next_run_goes_on_from_them(client: TestClient) -> None:
    answer = _answer(client)
    append(client, answer, 0, "abc", owner="g1")
    append(client, answer, 3, "def", owner="g1", model="b")
    failed = client.patch(f"/messages/{answer}", json={"status": "failed", "error": "upstream died"})
    assert failed.status_code == 200
    claimed = claim(client, answer, owner="g2").json()
    assert [part["model"] for part in claimed["answer_parts"]] == ["a", "b"]
    append(client, answer, 6, "ghi", owner="g2", model="b")
    append(client, answer, 9, "jkl", owner="g2", model="a")
    assert _parts(client, answer) == [("a", 0), ("b", 3), ("a", 9)]


def test_a_text_written_by_hand_has_no_parts(client: TestClient) -> None:
    answer = _answer(client)
    append(client, answer, 0, "abc", owner="g1")
    append(client, answer, 3, "def", owner="g1", model="b")
    assert client.patch(f"/messages/{answer}", json={"rating": True}).status_code == 200
    assert _parts(client, answer) == [("a", 0), ("b", 3)]
    assert client.patch(f"/messages/{answer}", json={"content": "edited"}).status_code == 200
    assert _parts(client, answer) is None


def test_a_finish_with_parts_records_each_models_tokens_and_budgets_count_them_once(client: TestClient) -> None:
    answer = _answer(client, tokens_per_day=31)
    append(client, answer, 0, "x" * 8, owner="g1", model="a")
    parts = [{"model": "a", "offset": 0}, {"model": "b", "offset": 8, "usage": FIGURES}]
    ended = _finish(client, answer, 8, "y" * 12, parts)
    assert ended.status_code == 200, ended.text
    assert _finish(client, answer, 8, "y" * 12, parts).status_code == 409  # ended once, counted once
    stored = client.get(f"/messages/{answer}").json()
    assert stored["answer_parts"][1] == {"model": "b", "offset": 8, "usage": FIGURES}
    rows = _by_model(client, "ann")
    # "a" sent no figures: its reserved prompt (3) and its 8 characters (2 tokens), estimated.
    assert (rows["a"]["total_tokens"], rows["a"]["estimated_tokens"], rows["a"]["answers"]) == (5, 5, 1)
    assert (rows["b"]["prompt_tokens"], rows["b"]["total_tokens"], rows["b"]["estimated_tokens"]) == (10, 15, 0)
    report = client.get("/usage", params={"user_id": "ann"}).json()
    assert report["total_tokens"] == 20
    assert {total["key"]: total["total_tokens"] for total in report["by_model"]} == {"a": 5, "b": 15}
    # 20 counted, 4 reserved by the next turn: the day's 31 fit it once, not twice.
    assert _answer(client, tokens_per_day=31)
    refused = client.post(
        f"/sessions/{random_id()}/turns",
        json={"inputs": [{"content": "hi"}], "account": {"user_id": "ann", "reserve_tokens": 4, "tokens_per_day": 24}},
    )
    assert refused.status_code == 409
    assert refused.json()["used"] == 24


def test_a_finish_without_parts_is_one_models_as_before(client: TestClient) -> None:
    answer = _answer(client, user_id="bea")
    append(client, answer, 0, "abc", owner="g1", model="b")
    ended = append(client, answer, 3, "d", owner="g1", finish={"status": "complete", "usage": FIGURES})
    assert ended.status_code == 200
    assert _parts(client, answer) is None  # "b" wrote all of it, not the turn's model: it is the answer's model
    assert client.get(f"/messages/{answer}").json()["model"] == "b"
    rows = _by_model(client, "bea")
    assert list(rows) == ["b"]  # and its tokens are b's
    assert rows["b"]["total_tokens"] == 15


def test_a_run_without_parts_stays_its_records_model(client: TestClient) -> None:
    answer = _answer(client, user_id="cid")
    append(client, answer, 0, "abcd", owner="g1", finish={"status": "failed", "usage": FIGURES})
    claim(client, answer, owner="g2")
    parts = [{"model": "a", "offset": 0, "usage": FIGURES}, {"model": "c", "offset": 4, "usage": FIGURES}]
    assert _finish(client, answer, 4, "efgh", parts).status_code == 409  # not its lease
    assert append(client, answer, 4, "efgh", owner="g2", finish={"status": "complete", "parts": parts}).is_success
    rows = _by_model(client, "cid")
    assert (rows["a"]["total_tokens"], rows["c"]["total_tokens"]) == (30, 15)
    assert (rows["a"]["answers"], rows["c"]["answers"]) == (1, 1)
    report = client.get("/usage", params={"user_id": "cid"}).json()
    assert report["total_tokens"] == 45
    assert [(day["answers"], day["total_tokens"]) for day in report["by_day"]] == [(1, 45)]  # one answer, once


def test_the_parts_survive_an_export_and_an_import(client: TestClient) -> None:
    answer = _answer(client)
    append(client, answer, 0, "abc", owner="g1")
    _finish(client, answer, 3, "def", [{"model": "a", "offset": 0}, {"model": "b", "offset": 3, "usage": FIGURES}])
    session_id = client.get(f"/messages/{answer}").json()["session_id"]
    document = client.get(f"/sessions/{session_id}/export").json()
    question, exported = document["messages"]
    assert "answer_parts" not in question
    assert exported["answer_parts"][1] == {"model": "b", "offset": 3, "usage": FIGURES}
    imported = client.post("/sessions/import", json=document).json()
    copied = client.get(f"/sessions/{imported['session']['id']}/messages").json()["items"][-1]
    assert copied["answer_parts"] == exported["answer_parts"]


@pytest.mark.parametrize(
    ("parts", "text"),
    [
        ([{"model": "a", "offset": 0}, {"model": "b", "offset": 0}], "abc"),
        ([{"model": "a", "offset": 2}, {"model": "b", "offset": 1}], "abc"),
        ([{"model": "a", "offset": 0}, {"model": "b", "offset": 4}], "abc"),
        ([], "abc"),
        ([{"model": "a", "offset": -1}], "abc"),
    ],
)
def test_parts_out_of_order_or_past_the_end_are_a_422(
    client: TestClient, parts: list[dict[str, Any]], text: str
) -> None:
    answer = _answer(client)
    response = _finish(client, answer, 0, text, parts)
    assert response.status_code == 422, response.text
    assert client.get(f"/messages/{answer}").json()["status"] == "in_progress"


@pytest.mark.parametrize(
    ("parts", "model", "writer", "offset", "expected"),
    [
        (None, "a", "a", 5, None),
        (None, "a", "b", 5, [("a", 0), ("b", 5)]),
        (None, "a", "b", 0, None),  # "a" wrote nothing: "b" is the answer's model (below)
        (None, None, "b", 5, [("b", 5)]),
        ([("a", 0), ("b", 5)], "a", "b", 9, [("a", 0), ("b", 5)]),
        ([("a", 0), ("b", 5)], "a", "a", 5, None),  # "b" wrote nothing: "a" goes on alone
        ([("a", 0), ("b", 5)], "a", "c", 5, [("a", 0), ("c", 5)]),
        ([("a", 0), ("b", 5)], "a", "a", 7, [("a", 0), ("b", 5), ("a", 7)]),
    ],
)
def test_which_part_an_append_begins(
    parts: list[tuple[str, int]] | None,
    model: str | None,
    writer: str,
    offset: int,
    expected: list[tuple[str, int]] | None,
) -> None:
    stored = None if parts is None else [{"model": m, "offset": o, "usage": None} for m, o in parts]
    after, named = after_append(stored, model, writer, offset)
    assert (None if after is None else [(part["model"], part["offset"]) for part in after]) == expected
    assert named == (writer if offset == 0 else model)
