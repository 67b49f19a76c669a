"""Budgets against a user who tries to spend past them with an ordinary key (issue 36): through a long stored history
that costs nothing to build, and through imported answers that crash recovery would have generated for free. Real
processes, in keys mode, on SQLite and on PostgreSQL."""

import threading
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from testing.upstream import Plan
from tests.chat_gateway.auth.test_identity import _client, _new_user, _user_key, admin, gateway, idp  # noqa: F401
from tests.chat_gateway.conftest import LocalService, sse_events

HISTORY_BUDGET_CHARS = 24_000  # the gateway's default: how much of a session's history a prompt carries


@pytest.fixture(scope="module")
def persistence_app(persistence_app_on_both: LocalService) -> LocalService:
    return persistence_app_on_both


def _long_conversation(as_user: httpx.Client) -> str:
    """A session holding a 24,000-character history, built without generating anything."""
    items = [{"role": "user", "content": f"Note {n}: " + "lorem ipsum " * 100} for n in range(20)]
    created = as_user.post("/v1/conversations", json={"items": items})
    assert created.status_code == 200, created.text
    return str(created.json()["id"]).removeprefix("conv_")


def test_a_burst_over_a_long_stored_history_passes_the_budget_by_at_most_one_answer(
    gateway: LocalService,  # noqa: F811
    admin: httpx.Client,  # noqa: F811
    fake_openai: FastAPI,
) -> None:
    user_id, budget = _new_user(), 2_000
    key = _user_key(admin, user_id, limits={"tokens_per_day": budget})
    with _client(gateway, key) as as_user:
        session_id = _long_conversation(as_user)
    responses: list[httpx.Response] = []

    def start() -> None:
        body = {"message": "And?", "session_id": session_id, "options": {"max_tokens": 1}}
        responses.append(httpx.post(f"{gateway.url}/chat", json=body, headers={"x-api-key": key}, timeout=60))

    threads = [threading.Thread(target=start) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    admitted = [r for r in responses if r.status_code == 200]
    assert {r.status_code for r in responses} <= {200, 429}
    assert 1 <= len(admitted) <= 2, f"{len(admitted)} admitted"  # each carries the whole history: one is the budget
    used = admin.get("/usage", params={"user_id": user_id}).json()["total_tokens"]
    one_answer = HISTORY_BUDGET_CHARS // 4 + 100
    assert used <= budget + one_answer
    assert len(fake_openai.state.requests) == len(admitted)  # a refused start reaches no upstream


def _document(as_user: httpx.Client, session_id: str) -> dict[str, Any]:
    exported = as_user.get(f"/chat/sessions/{session_id}/export", params={"format": "json"})
    assert exported.status_code == 200, exported.text
    document: dict[str, Any] = exported.json()
    return document


def test_imported_unfinished_answers_are_never_generated_for_free(
    gateway: LocalService,  # noqa: F811
    admin: httpx.Client,  # noqa: F811
    fake_openai: FastAPI,
) -> None:
    user_id = _new_user()
    key = _user_key(admin, user_id, limits={"tokens_per_day": 5})
    with _client(gateway, key) as as_user:
        spent = as_user.post("/chat", json={"message": "hi", "options": {"max_tokens": 50}})
        assert spent.status_code == 200, spent.text
        assert as_user.post("/chat", json={"message": "more"}).status_code == 429  # over budget now
        document = _document(as_user, spent.json()["session_id"])
        answer = document["messages"][-1]
        answer |= {"status": "in_progress", "content": "Lyon sits", "attempts": 1}
        # Options a chat would refuse, and a model of the attacker's choosing.
        answer |= {"options": {"n": 3, "foo": "bar", "max_tokens": 99999}, "model": "any-expensive-model"}
        refused = as_user.post("/chat/sessions/import", json=document)
        assert refused.status_code == 400, refused.text
        assert "options" in refused.json()["detail"]
        answer["options"] = {"max_tokens": 99999}
        imported = as_user.post("/chat/sessions/import", json=document)
        assert imported.status_code == 201, imported.text
        asked = len(fake_openai.state.requests)
        time.sleep(1.5)  # crash recovery scans every 0.25 s here
        assert len(fake_openai.state.requests) == asked  # nothing generated it
        session_id = imported.json()["session"]["id"]
        stored = as_user.get(f"/chat/sessions/{session_id}/messages").json()["items"][-1]
        assert (stored["status"], stored["content"]) == ("failed", "Lyon sits")
        resumed = as_user.post(f"/chat/messages/{stored['id']}/resume")
        assert resumed.status_code == 429  # resumable, through the budgeted path only
        assert len(fake_openai.state.requests) == asked


def test_cancelling_runs_over_a_long_prompt_spends_the_budget_all_the_same(
    gateway: LocalService,  # noqa: F811
    admin: httpx.Client,  # noqa: F811
    fake_openai: FastAPI,
) -> None:
    """A run cancelled before the upstream's last chunk has no upstream figures: it is charged its prompt, so a
    loop of long prompts cancelled at once is refused once the budget is spent, as any other."""
    user_id, budget = _new_user(), 3_000
    key = _user_key(admin, user_id, limits={"tokens_per_day": budget})
    fake_openai.state.default_plan = Plan(delay=0.05)
    started, refused = 0, None
    try:
        with _client(gateway, key) as as_user:
            for _ in range(10):
                body = {"message": "Summarise: " + "lorem ipsum " * 330, "stream": True, "options": {"max_tokens": 5}}
                with as_user.stream("POST", "/chat", json=body) as stream:
                    if stream.status_code == 429:
                        refused = stream
                        break
                    assert stream.status_code == 200
                    started += 1
                    first = next(event for event in sse_events(stream) if event.event == "start")
                    assert as_user.post(f"/chat/messages/{first.data['message_id']}/cancel").status_code == 200
    finally:
        fake_openai.state.default_plan = Plan()
    assert refused is not None, f"{started} long prompts started and cancelled, none refused"
    assert started <= 4  # about a thousand tokens of prompt each: three spend the budget
    used = admin.get("/usage", params={"user_id": user_id}).json()["total_tokens"]
    assert budget <= used <= budget + 1_100
