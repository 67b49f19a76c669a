"""The gateway with an upstreams file: three fake upstreams behind one gateway, on both databases."""

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testing.processes import Service
from testing.upstream import TEXT, Plan
from tests.chat_gateway.conftest import gateway_env, read_finished
from tests.chat_gateway.upstreams.conftest import Fake, routed_gateway

pytestmark = pytest.mark.slow  # starts processes: left out of `make test-fast`

UPSTREAMS = """
[[upstreams]]
name = "a"
base_url = "{a}"
models = ["alpha", "shared"]
continuation = "exact"
failure_threshold = 1000  # the tests script its failures: never skipped for them

[[upstreams]]
name = "b"
base_url = "{b}"
models = ["shared", "beta"]
continuation = "exact"

[[upstreams]]
name = "c"
base_url = "{c}"
models = "discover"
continuation = "exact"

[[upstreams]]
name = "flaky"
base_url = "{a}"
models = ["fragile"]
continuation = "exact"
failure_threshold = 1
cooldown_seconds = 2

[[upstreams]]
name = "slow"
base_url = "{a}"
models = ["slow-model"]
continuation = "exact"
timeout_seconds = 1

[[upstreams]]
name = "narrow"
base_url = "{b}"
models = ["narrow"]
continuation = "exact"
max_concurrency = 1

[aliases]
fast = "beta"

[fallbacks]
shared = ["gamma"]
fragile = ["gamma"]
slow-model = ["gamma"]
"""


@pytest.fixture(scope="module")
def persistence(persistence_on_both: Service) -> Service:
    """Routing, fallbacks and limits hold on both databases."""
    return persistence_on_both


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory, persistence: Service, _fakes: list[Fake]) -> Iterator[Service]:
    """A gateway whose upstreams are the three fakes (a, b, c) under several names (UPSTREAMS above)."""
    tmp = tmp_path_factory.mktemp("routed")
    a, b, c = _fakes
    c.app.state.models = ["gamma"]  # what c serves, as its /v1/models says at start-up
    with routed_gateway(tmp, persistence, UPSTREAMS.format(a=a.url, b=b.url, c=c.url)) as service:
        yield service


@pytest.fixture
def gateway(routed: Service, fakes: list[Fake]) -> Service:
    for fake in fakes:
        fake.app.state.models = None
    fakes[2].app.state.models = ["gamma"]
    return routed


def _complete(gateway: Service, model: str | None) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "Where is Lyon?"}]} | ({"model": model} if model else {})
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)


def test_the_models_are_the_union_of_the_upstreams_each_with_its_owner(gateway: Service) -> None:
    listed = httpx.get(f"{gateway.url}/v1/models", timeout=30).json()["data"]
    owners = {model["id"]: model["owned_by"] for model in listed}
    assert owners == {
        "alpha": "a",
        "shared": "a",
        "beta": "b",
        "gamma": "fake",  # as c lists it
        "fragile": "flaky",
        "slow-model": "slow",
        "narrow": "narrow",
        "fast": "b",  # the alias, owned as the model it names
    }


def test_a_model_picks_its_upstream_and_an_alias_its_model(gateway: Service, fakes: list[Fake]) -> None:
    a, b, c = fakes
    for model in ("beta", "fast", "gamma", None):
        response = _complete(gateway, model)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == TEXT
    assert (a.models_asked(), b.models_asked(), c.models_asked()) == (["alpha"], ["beta", "beta"], ["gamma"])


def test_chat_takes_a_model_too(gateway: Service, fakes: list[Fake], store: httpx.Client) -> None:
    response = httpx.post(f"{gateway.url}/chat", json={"message": "hi", "model": "fast"}, timeout=30)
    assert response.status_code == 200, response.text
    assert fakes[1].models_asked() == ["beta"]
    assert read_finished(store, response.json()["message_id"])["status"] == "complete"


def test_an_unknown_model_is_a_404_in_openais_shape_listing_the_models(gateway: Service) -> None:
    response = _complete(gateway, "gpt-9")
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("model_not_found", "not_found_error")
    assert error["message"] == (
        "The model 'gpt-9' does not exist. "
        "The models are: alpha, beta, fast, fragile, gamma, narrow, shared, slow-model"
    )
    assert httpx.post(f"{gateway.url}/chat", json={"message": "hi", "model": "gpt-9"}, timeout=30).status_code == 404


@pytest.mark.parametrize("failure", [Plan(status=503), Plan(status=429, retry_after="30"), Plan(stall=3)])
@pytest.mark.serial  # a time limit of its own: make test runs it alone
def test_before_the_first_word_a_failure_moves_the_chat_to_the_next_upstream(
    gateway: Service, fakes: list[Fake], failure: Plan
) -> None:
    """a fails (an error, or a stream that says nothing for longer than slow's timeout), b fails, c answers."""
    a, b, c = fakes
    model = "slow-model" if failure.stall else "shared"
    a.app.state.plans.append(failure)
    b.app.state.plans.append(Plan(status=502))
    began = time.monotonic()
    response = _complete(gateway, model)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == TEXT
    assert time.monotonic() - began < 2.5  # at once: no backoff, no Retry-After from another upstream
    assert c.models_asked() == ["gamma"]
    assert a.models_asked() == [model]


def test_a_failing_upstream_is_skipped_until_its_cool_down_ends_and_health_says_so(
    gateway: Service, fakes: list[Fake]
) -> None:
    a, _, c = fakes
    a.app.state.plans.append(Plan(status=500))
    assert _complete(gateway, "fragile").status_code == 200  # answered by c
    assert _complete(gateway, "fragile").status_code == 200  # flaky is skipped: c again
    assert (a.models_asked(), c.models_asked()) == (["fragile"], ["gamma", "gamma"])
    ready = httpx.get(f"{gateway.url}/health/ready", timeout=30).json()
    flaky = next(upstream for upstream in ready["upstreams"] if upstream["name"] == "flaky")
    assert flaky["state"] == "open"
    assert flaky["error_rate"] > 0
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=30).text
    assert 'chat_upstream_breaker_open{upstream="flaky"} 1.0' in metrics
    assert 'chat_upstream_requests_total{outcome="error",upstream="flaky"}' in metrics
    time.sleep(2)
    assert _complete(gateway, "fragile").status_code == 200  # the probe: flaky answers, and is closed
    assert a.models_asked() == ["fragile", "fragile"]
    ready = httpx.get(f"{gateway.url}/health/ready", timeout=30).json()
    flaky = next(upstream for upstream in ready["upstreams"] if upstream["name"] == "flaky")
    assert (flaky["state"], flaky["latency_seconds"] is not None) == ("closed", True)


def test_past_an_upstreams_concurrency_limit_a_chat_is_refused_with_retry_after(
    gateway: Service, fakes: list[Fake]
) -> None:
    fakes[1].app.state.plans.append(Plan(delay=0.1))  # about 4 s: it holds narrow's one stream
    body = {"message": "hi", "model": "narrow", "stream": True}
    with httpx.stream("POST", f"{gateway.url}/chat", json=body, timeout=30) as holding:
        assert holding.status_code == 200
        next(holding.iter_lines())
        refused = _complete(gateway, "narrow")
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "10"
    assert refused.json()["error"]["code"] == "upstream_busy"


def test_an_answer_is_stored_under_its_configured_model_and_resumed_on_it(
    gateway: Service, fakes: list[Fake], store: httpx.Client
) -> None:
    """Its upstream calls itself "fake-model", which no upstream lists: the answer is stored as alpha all the same,
    and resumed on alpha."""
    a = fakes[0]
    a.app.state.plans.extend([Plan(drop_after=3)] * 4)  # every attempt broken off: the answer fails
    failed = httpx.post(f"{gateway.url}/chat", json={"message": "hi", "model": "alpha"}, timeout=30).json()
    stored = read_finished(store, failed["message_id"])
    assert (stored["status"], stored["model"]) == ("failed", "alpha")
    resumed = httpx.post(f"{gateway.url}/chat/messages/{failed['message_id']}/resume", timeout=30)
    assert resumed.status_code == 200, resumed.text
    assert read_finished(store, failed["message_id"])["content"] == TEXT
    assert a.models_asked() == ["alpha"] * 5


def _streamed_models(response: httpx.Response) -> set[str]:
    lines = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: {")]
    return {json.loads(line)["model"] for line in lines}


def test_every_view_of_an_answer_names_the_configured_model_never_the_upstreams_own(
    gateway: Service, store: httpx.Client
) -> None:
    """Asked for by its alias ("fast"), each answer is beta's, as configured, though b calls itself "fake-model":
    in Chat Completions (chunks and whole), Responses, the stored message and the ledger (GET /usage)."""
    user = f"names-{uuid.uuid4().hex[:8]}"
    question = [{"role": "user", "content": "Where is Lyon?"}]
    asked = {"model": "fast", "messages": question, "user": user}
    streamed = httpx.post(f"{gateway.url}/v1/chat/completions", json=asked | {"stream": True}, timeout=30)
    whole = httpx.post(f"{gateway.url}/v1/chat/completions", json=asked, timeout=30).json()
    respond = {"model": "fast", "input": "hi", "user": user}
    response = httpx.post(f"{gateway.url}/v1/responses", json=respond, timeout=30).json()
    chat = httpx.post(f"{gateway.url}/chat", json={"message": "hi", "model": "fast", "user_id": user}, timeout=30)
    assert _streamed_models(streamed) == {"beta"}
    assert (whole["model"], response["model"]) == ("beta", "beta")
    response_id = str(uuid.UUID(hex=response["id"].removeprefix("resp_")))
    ids = [whole["id"].removeprefix("chatcmpl-"), response_id, chat.json()["message_id"]]
    assert {read_finished(store, message_id)["model"] for message_id in ids} == {"beta"}
    rows = store.get("/usage", params={"user_id": user}).json()["rows"]
    assert {row["model"] for row in rows} == {"beta"}
    assert sum(row["answers"] for row in rows) == 4


def test_a_fallback_to_a_model_no_upstream_discovered_stops_start_up_naming_it(
    tmp_path: Path, persistence: Service, fakes: list[Fake]
) -> None:
    fakes[2].app.state.models = ["gamma"]
    path = tmp_path / "upstreams.toml"
    path.write_text(
        f'[[upstreams]]\nname = "c"\nbase_url = "{fakes[2].url}"\nmodels = "discover"\ncontinuation = "exact"\n'
        '\n[fallbacks]\ngamma = ["delta"]\n'
    )
    env = gateway_env(tmp_path, persistence.url, None, UPSTREAMS_FILE=str(path), OPENAI_MODEL="gamma")
    with pytest.raises(RuntimeError, match="did not start") as refused:
        Service.uvicorn("chat_gateway.main:create_app", env, tmp_path / "gateway.log").start()
    assert "fallbacks: 'gamma' names 'delta', which no upstream serves (they serve: gamma)" in str(refused.value)
