"""Clients that speak Chat Completions, run as their users run them (installed by `make clients` in a
virtualenv of their own), unchanged but for the gateway's base URL."""

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.chat_gateway.conftest import Service, persistence_on
from tests.conftest import unreachable
from tests.fake_openai import TEXT, Plan

pytestmark = pytest.mark.slow  # starts processes: left out of `make test-fast`

ROOT = Path(__file__).resolve().parents[2]
AGENT = Path(__file__).parent / "clients" / "weather_agent.py"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def persistence(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Every real client's test runs on both databases."""
    with persistence_on(tmp_path_factory.mktemp("persistence"), request.param) as service:
        yield service


@pytest.fixture(scope="module")
def clients() -> Path:
    """The clients' virtualenv's bin directory."""
    venv = Path(os.environ.get("CLIENTS_VENV", ROOT / ".venv-clients"))
    if not (venv / ".installed").exists():
        unreachable(f"the real clients are not installed in {venv}: `make clients` installs them")
    return venv / "bin"


def _sessions(store: httpx.Client) -> set[str]:
    return {session["id"] for session in store.get("/sessions", params={"limit": 100}).json()["items"]}


def _roles_and_calls(store: httpx.Client, session_id: str) -> list[tuple[str, list[str]]]:
    items = store.get(f"/sessions/{session_id}/messages").json()["items"]
    return [(m["role"], [call["function"]["name"] for call in m["tool_calls"] or []]) for m in items]


@pytest.mark.parametrize("interface", ["chat", "responses"])
def test_an_agents_sdk_agent_runs_two_tools_in_two_rounds_into_one_stored_session(
    clients: Path, gateway: Service, store: httpx.Client, fake_openai: FastAPI, interface: str
) -> None:
    """Through Chat Completions (no session header) or the Responses API (its default), the agent's three
    requests land in one session, calls and results included."""
    before = _sessions(store)
    fake_openai.state.text = "Let me look."
    fake_openai.state.plans.extend(
        [
            Plan(tool_calls=[("get_weather", '{"city":"Lyon"}')]),
            Plan(tool_calls=[("get_time", '{"tz":"Europe/Paris"}')]),
        ]
    )
    ran = subprocess.run(
        [clients / "python", AGENT, gateway.url, interface], capture_output=True, text=True, timeout=120, check=False
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result == {"output": "Let me look.", "ran": ["get_weather(Lyon)", "get_time(Europe/Paris)"]}
    (session_id,) = _sessions(store) - before  # three requests, no session header: one session
    assert _roles_and_calls(store, session_id) == [
        ("user", []),
        ("assistant", ["get_weather"]),
        ("tool", []),
        ("assistant", ["get_time"]),
        ("tool", []),
        ("assistant", []),
    ]
    assert len(fake_openai.state.requests) == 3


@pytest.fixture
def llm(clients: Path, gateway: Service, tmp_path: Path) -> list[str]:
    """The llm CLI, with the gateway as an OpenAI-compatible model named `gateway` (its documented way)."""
    models = f'- model_id: gateway\n  model_name: fake-model\n  api_base: "{gateway.url}/v1"\n'
    (tmp_path / "extra-openai-models.yaml").write_text(models)
    return [str(clients / "llm")]


def test_llm_follow_ups_land_in_one_session(
    llm: list[str], gateway: Service, store: httpx.Client, fake_openai: FastAPI, tmp_path: Path
) -> None:
    env = os.environ | {"LLM_USER_PATH": str(tmp_path), "OPENAI_API_KEY": "unused"}
    before = _sessions(store)
    for args in (["-m", "gateway", "Where is Lyon?"], ["-c", "And Paris?"], ["-c", "Which is bigger?"]):
        ran = subprocess.run([*llm, *args], capture_output=True, text=True, timeout=60, env=env, check=False)
        assert (ran.returncode, ran.stdout.strip()) == (0, TEXT), ran.stderr
    (session_id,) = _sessions(store) - before
    contents = [m["content"] for m in store.get(f"/sessions/{session_id}/messages").json()["items"]]
    assert contents == ["Where is Lyon?", TEXT, "And Paris?", TEXT, "Which is bigger?", TEXT]
