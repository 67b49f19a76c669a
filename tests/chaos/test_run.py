"""The chaos run in miniature (60 seconds; `make chaos` runs five minutes): every target of docs/reliability.md."""

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.answers import answer_for, key_of, tokens
from chaos.upstream import NOT_A_PREFIX, _text_to_send

ROOT = Path(__file__).parents[2]


def test_answers_are_known_and_some_repeat_themselves() -> None:
    answers = [answer_for(f"chat-0-{n}: tell me something") for n in range(40)]
    assert all(200 <= len(answer) <= 1000 for answer in answers), [len(a) for a in answers]
    assert any("| Lyon | Rhone |\n| Lyon | Rhone |" in answer for answer in answers)
    assert any(answer.startswith("ha ha ha") for answer in answers)
    assert answer_for("chat-0-1: tell me something") == answers[1]
    assert key_of("chat-3-14: tell me something") == "3-14"
    assert "".join(tokens(answers[0])) == answers[0]


def test_the_upstream_continues_exactly_or_restarting_and_marks_a_corrupted_join() -> None:
    question = "chat-1-2: tell me something"
    answer = answer_for(question)
    asked = [{"role": "user", "content": question}]
    assert _text_to_send(asked, "exact") == ("1-2", answer)
    partial = [
        *asked,
        {"role": "system", "content": "begin with [[the end]]"},
        {"role": "assistant", "content": answer[:50]},
    ]
    assert _text_to_send(partial, "exact") == ("1-2", answer[50:])
    assert _text_to_send(partial, "restart") == ("1-2", "the end" + answer[50:])
    corrupted = [*asked, {"role": "assistant", "content": "not the start"}]
    assert _text_to_send(corrupted, "exact")[1] == NOT_A_PREFIX


@pytest.mark.slow
def test_sixty_seconds_of_chaos_meet_every_target(tmp_path: Path) -> None:
    if not (shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")):
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL's server binaries (initdb, pg_ctl) are missing")
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are missing")
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "chaos", "--seconds", "60", "--json", str(report), "--no-timing-targets"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(report.read_text())
    assert figures["chats"] >= 60
    assert set(figures["faults"]) == {"gateway_kill", "gateway_pause", "persistence_kill", "postgres_restart"}
    assert figures["answers"].get("exact", 0) > 0.8 * figures["chats"]
