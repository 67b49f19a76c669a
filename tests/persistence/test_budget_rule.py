"""The budget rule as a property: whatever a user's clients interleave (new chats, turns and tool rounds over long
stored histories, failures, resumes, imported unfinished answers), the ledger never records more than the budget
plus one answer, when each run costs what its reservation says it may (the gateway's own rule, Caller.account)."""

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chat_gateway.auth.identity import Caller, Role
from shared.identity import CHARS_PER_TOKEN, Limits
from tests.persistence.conftest import new_message, new_session

HISTORY_BUDGET_CHARS = 6_000  # the gateway's HISTORY_BUDGET_CHARS, smaller: a few long notes reach it

Op = tuple[str, int, int, int]  # (kind, which, size, max_tokens)
OPS = st.lists(
    st.tuples(
        st.sampled_from(["chat", "turn", "tool_round", "finish", "fail", "resume", "import", "note"]),
        st.integers(0, 7),
        st.integers(1, 3_000),
        st.integers(1, 200),
    ),
    min_size=1,
    max_size=24,
)


@dataclass
class Run:
    """An answer being generated: what its prompt really is, and what it may write."""

    answer_id: str
    prompt_chars: int
    max_tokens: int


@dataclass
class User:
    client: TestClient
    budget: int
    user_id: str = field(default_factory=lambda: f"prop-{uuid.uuid4().hex[:10]}")
    sessions: list[str] = field(default_factory=list)
    stored_chars: dict[str, int] = field(default_factory=dict)  # what each session holds
    running: list[Run] = field(default_factory=list)
    ended: list[tuple[str, str, int]] = field(default_factory=list)  # (answer, session, max_tokens) failed
    before: dict[str, int] = field(default_factory=dict)  # what each answer's session held before it
    costliest: int = 0

    @property
    def caller(self) -> Caller:
        return Caller(Role.USER, self.user_id, Limits(tokens_per_day=self.budget), None, self.user_id)

    def account(self, prompt_chars: int, max_tokens: int, history: bool) -> dict[str, Any]:
        history_chars = HISTORY_BUDGET_CHARS if history else 0
        account = self.caller.account(
            self.user_id, max_tokens=max_tokens, prompt_chars=prompt_chars, reserve=0, history_chars=history_chars
        )
        return account.model_dump()

    def history(self, session_id: str) -> int:
        return min(self.stored_chars.get(session_id, 0), HISTORY_BUDGET_CHARS)

    def start(self, session_id: str | None, role: str, size: int, max_tokens: int) -> None:
        """A new chat (no session yet) or a turn in a session, as the gateway stores it."""
        new = session_id is None
        session_id = session_id or str(uuid.uuid4())
        content = "q" * size
        inputs = (
            [{"content": content}] if role == "user" else [{"role": "tool", "content": content, "tool_call_id": "c1"}]
        )
        body: dict[str, Any] = {
            "inputs": inputs,
            "owner": "gw",
            "answer": {"options": {"max_tokens": max_tokens}},
            "account": self.account(size, max_tokens, history=not new),
        }
        if new:
            body["session"] = {"user_id": self.user_id, "title": "t"}
        response = self.client.post(f"/sessions/{session_id}/turns", json=body)
        if response.status_code == 409:
            assert response.json()["code"] == "budget_exceeded"
            return
        assert response.status_code == 201, response.text
        prompt = self.history(session_id) + size
        if new:
            self.sessions.append(session_id)
        self.stored_chars[session_id] = self.stored_chars.get(session_id, 0) + size
        self.before[response.json()["answer"]["id"]] = self.stored_chars[session_id]
        self.running.append(Run(response.json()["answer"]["id"], prompt, max_tokens))

    def end(self, run: Run, status: str) -> None:
        """The run ends: its upstream's figures are its whole prompt and at most its max_tokens."""
        written = "a" * (4 * run.max_tokens)
        cost = math.ceil(run.prompt_chars / CHARS_PER_TOKEN) + run.max_tokens
        usage = {"prompt_tokens": cost - run.max_tokens, "completion_tokens": run.max_tokens, "total_tokens": cost}
        finish = {"status": status, "usage": usage} | ({"error": "upstream 500"} if status == "failed" else {})
        text = self.client.get(f"/messages/{run.answer_id}").json()["content"]
        appended = self.client.post(
            f"/messages/{run.answer_id}/append", json={"offset": len(text), "text": written, "finish": finish}
        )
        assert appended.status_code == 200, appended.text
        self.costliest = max(self.costliest, cost)
        self.running.remove(run)
        message = self.client.get(f"/messages/{run.answer_id}").json()
        self.stored_chars[message["session_id"]] += len(written)
        if status == "failed":
            self.ended.append((run.answer_id, message["session_id"], run.max_tokens))

    def resume(self, answer_id: str, session_id: str, max_tokens: int) -> None:
        """A failed (or imported unfinished) answer resumed from its text, as the gateway's resume reserves it."""
        text = self.client.get(f"/messages/{answer_id}").json()["content"]
        account = self.account(len(text), max_tokens, history=True)
        reserved = self.client.post(f"/usage/{answer_id}/reserve", json=account)
        if reserved.status_code == 409:
            return
        assert reserved.status_code == 204, reserved.text
        claimed = self.client.post(f"/messages/{answer_id}/claim", json={"owner": "gw"})
        assert claimed.status_code == 200, claimed.text
        # Its history is what came before it: what its session holds after it (later turns) is not sent.
        prompt = min(self.before[answer_id], HISTORY_BUDGET_CHARS) + len(text)
        self.running.append(Run(answer_id, prompt, max_tokens))

    def import_unfinished(self, size: int) -> None:
        """A chat exported elsewhere with an answer mid-generation, imported: it comes in failed, never generated."""
        session_id = str(uuid.uuid4())
        when = "2026-01-01T00:00:00Z"
        times = {"sent_at": when, "created_at": when, "updated_at": when}
        session = {"id": session_id, "user_id": self.user_id, "title": "imported", "is_favorite": False}
        document = {
            "version": 2,
            "session": session | {"created_at": when, "updated_at": when},
            "messages": [
                {"id": str(uuid.uuid4()), "role": "user", "content": "n" * size, "status": "complete"} | times,
                {"id": str(uuid.uuid4()), "role": "assistant", "content": "half", "status": "in_progress"}
                | times
                | {"created_at": "2026-01-01T00:00:01Z"},
            ],
        }
        imported = self.client.post("/sessions/import", json=document)
        assert imported.status_code == 201, imported.text
        messages = self.client.get(f"/sessions/{session_id}/messages").json()["items"]
        assert messages[-1]["status"] == "failed"  # nothing generates it by itself
        self.stored_chars[session_id] = size + 4
        self.before[messages[-1]["id"]] = size
        self.ended.append((messages[-1]["id"], session_id, 50))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(budget=st.integers(50, 3_000), ops=OPS)
# Found by a run: a resumed answer's prompt modelled as its whole session (turns stored after it included), where
# the gateway sends, and persistence reserves, only what came before it.
@example(
    budget=50,
    ops=[
        ("chat", 0, 1, 1),
        ("turn", 0, 55, 1),
        ("fail", 0, 1, 1),
        ("turn", 0, 1, 1),
        ("resume", 0, 1, 1),
        ("turn", 0, 1, 1),
    ],
)
def test_no_interleaving_records_more_than_the_budget_and_one_answer(
    client: TestClient, budget: int, ops: list[Op]
) -> None:
    user = User(client, budget)
    for kind, which, size, max_tokens in ops:
        session = user.sessions[which % len(user.sessions)] if user.sessions else None
        if kind == "chat" or (kind in ("turn", "tool_round", "note") and session is None):
            user.start(None, "user", size, max_tokens)
        elif kind in ("turn", "tool_round"):
            user.start(session, "user" if kind == "turn" else "tool", size, max_tokens)
        elif kind == "note" and session is not None:  # history grows for free (the Conversations API's items)
            new_message(client, session, role="user", content="n" * size)
            user.stored_chars[session] += size
        elif kind in ("finish", "fail") and user.running:
            user.end(user.running[which % len(user.running)], "complete" if kind == "finish" else "failed")
        elif kind == "resume" and user.ended:
            answer_id, session_id, _ = user.ended.pop(which % len(user.ended))
            user.resume(answer_id, session_id, max_tokens)
        elif kind == "import":
            user.import_unfinished(size)
    while user.running:
        user.end(user.running[0], "complete")
    recorded = client.get("/usage", params={"user_id": user.user_id}).json()["total_tokens"]
    assert recorded <= budget + user.costliest


def test_a_long_history_is_reserved_before_it_is_sent(client: TestClient) -> None:
    """The example the property first found: one answer over a long free history is one answer's worth."""
    user = User(client, budget=100)
    user.start(None, "user", 10, 5)
    user.end(user.running[0], "complete")
    session = new_session(client, user_id=user.user_id)["id"]
    new_message(client, session, role="user", content="n" * 5_000)
    user.stored_chars[session] = 5_000
    user.sessions.append(session)
    for _ in range(5):
        user.start(session, "user", 10, 1)
    assert len(user.running) == 1  # the first reserved the history: the budget was gone
    while user.running:
        user.end(user.running[0], "complete")
    assert client.get("/usage", params={"user_id": user.user_id}).json()["total_tokens"] <= 100 + user.costliest


def test_a_run_ended_without_the_upstreams_figures_pays_for_its_prompt(client: TestClient) -> None:
    """Cancelled, deleted, failed or from an upstream that sends none: its prompt was sent, and is billed."""
    user = User(client, budget=10_000)
    account = user.account(4_000, 10, history=False)  # 1,000 tokens of prompt, reserved
    ended = []
    for _ in range(2):
        session_id = str(uuid.uuid4())
        body = {"session": {"user_id": user.user_id, "title": "t"}, "inputs": [{"content": "q"}], "owner": "gw"}
        turn = client.post(f"/sessions/{session_id}/turns", json=body | {"account": account})
        assert turn.status_code == 201, turn.text
        ended.append((session_id, turn.json()["answer"]["id"]))
    # One cancelled with 8 characters written, the other deleted while it is generated.
    client.post(f"/messages/{ended[0][1]}/append", json={"offset": 0, "text": "Lyon sit"})
    assert client.patch(f"/messages/{ended[0][1]}", json={"status": "failed", "error": "cancelled"}).status_code == 200
    assert client.delete(f"/sessions/{ended[1][0]}").status_code == 204
    report = client.get("/usage", params={"user_id": user.user_id}).json()
    assert report["total_tokens"] == 1_000 + 2 + 1_000
    assert report["rows"][0]["estimated_tokens"] == report["total_tokens"]
