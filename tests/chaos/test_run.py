"""The chaos run in miniature (60 seconds; `make chaos` runs five minutes): every target of docs/reliability.md,
with a sampling upstream and the answer log in Redis (CHAOS_REDIS_URL)."""

import glob
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chaos.answers import answer_for, key_of, sampled_answer
from chaos.run import FAULTS, REDIS_URL
from chaos.upstream import NOT_A_PREFIX, answering
from testing.chunks import tokens
from testing.upstream import Plan, create_fake_openai, remaining_text
from tests.conftest import reachable_redis, serve

ROOT = Path(__file__).parents[2]


def test_answers_are_known_and_some_repeat_themselves() -> None:
    answers = [answer_for(f"chat-0-{n}: tell me something") for n in range(40)]
    assert all(200 <= len(answer) <= 1000 for answer in answers), [len(a) for a in answers]
    assert any("| Lyon | Rhone |\n| Lyon | Rhone |" in answer for answer in answers)
    assert any(answer.startswith("ha ha ha") for answer in answers)
    assert answer_for("chat-0-1: tell me something") == answers[1]
    assert key_of("chat-3-14: tell me something") == "3-14"
    assert "".join(tokens(answers[0])) == answers[0]


def sent_for(messages: list[dict[str, str]], mode: str, sampling: random.Random | None = None) -> str:
    """What the chaos run's upstream sends for ``messages``, its random faults aside."""
    answer = answering(sampling)(messages)
    return remaining_text(messages, Plan(restart=mode == "restart"), answer, NOT_A_PREFIX)


def test_the_upstream_continues_exactly_or_restarting_and_marks_a_corrupted_join() -> None:
    question = "chat-1-2: tell me something"
    answer = answer_for(question)
    first = [{"role": "user", "content": question}]
    assert sent_for(first, "exact") == answer
    partial = [
        *first,
        {"role": "system", "content": "begin with [[the end]]"},
        {"role": "assistant", "content": answer[:50]},
    ]
    assert sent_for(partial, "exact") == answer[50:]
    assert sent_for(partial, "restart") == "the end" + answer[50:]
    corrupted = [*first, {"role": "assistant", "content": "not the start"}]
    assert sent_for(corrupted, "exact") == NOT_A_PREFIX


def _kind(answer: str) -> str:
    if answer.startswith("| city | river |"):
        return "table"
    if answer.startswith("if (a) {"):
        return "code"
    return "laughter" if answer.endswith("!") else "prose"


def test_a_sampling_upstream_writes_new_words_of_the_same_kind_and_continues_any_partial_answer() -> None:
    questions = [f"chat-0-{n}: tell me something" for n in range(40)]
    chance = random.Random(3)
    drawn = [[sampled_answer(question, chance) for _ in range(5)] for question in questions]
    assert all(len(set(draws)) > 1 for draws in drawn), "every kind of answer is drawn anew"
    for question, draws in zip(questions, drawn, strict=True):
        assert {_kind(draw) for draw in draws} == {_kind(answer_for(question))}, question
    question = questions[0]
    partial = [
        {"role": "user", "content": question},
        {"role": "system", "content": "begin with [[cut mid-wo]]"},
        {"role": "assistant", "content": "cut mid-wo"},
    ]
    sent = sent_for(partial, "restart", random.Random(1))
    assert sent.startswith("cut mid-wo")
    assert NOT_A_PREFIX not in sent
    fresh = [sent_for(partial, "exact", random.Random(seed)) for seed in range(5)]
    assert len(set(fresh)) > 1, "a continuation is sampled too"


def test_an_upstream_in_an_outage_refuses_every_request_and_cuts_its_streams() -> None:
    app = create_fake_openai()
    app.state.default_plan = Plan(delay=0.05)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "chat-0-0: tell me something"}]}
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as streaming:
            lines = streaming.iter_lines()
            next(lines)
            assert http.post("/control/outage", params={"seconds": 0.5}).status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                list(lines)
        refused = http.post("/v1/chat/completions", json=body)
        assert (refused.status_code, refused.json()["error"]["type"]) == (503, "server_error")
        time.sleep(0.5)
        assert http.post("/v1/chat/completions", json=body | {"stream": False}).status_code == 200


@pytest.mark.slow
@pytest.mark.serial  # its targets are the run's own: make test runs it alone
def test_sixty_seconds_of_chaos_meet_every_target(tmp_path: Path) -> None:
    if not (shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")):
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup) are missing")
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup) are missing")
    reachable_redis(REDIS_URL, "CHAOS_REDIS_URL")  # the answer log's
    report = tmp_path / "report.json"
    # Faults 3 s apart on average (5 in make chaos): every kind comes at least once in the minute, even on a busy
    # machine, where restarting a process or rebuilding a replica takes several seconds.
    command = [sys.executable, "-m", "chaos", "--seconds", "60", "--fault-gap", "3"]
    command += ["--json", str(report), "--no-timing-targets"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(report.read_text())
    assert figures["chats"] >= 60
    assert set(figures["faults"]) == set(FAULTS)
    assert figures["writes acknowledged by the probe"] > 1000
    assert figures["answers"].get("exact", 0) > 0.8 * figures["chats"]
    assert figures["upstream"] == "sampled"
    assert figures["answer log"] == "redis"
