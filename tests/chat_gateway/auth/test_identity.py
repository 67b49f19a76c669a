"""Identity, isolation, usage and budgets, against real processes: persistence, a gateway with admin keys and
an identity provider (a JWKS served locally), and the fake upstream. Every user reaches only their own chats."""

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Response
from openai import OpenAI

from chat_gateway.auth.identity import Authenticator
from shared.identity import DEFAULT_USER, RESERVED_USERS
from testing.processes import Service
from testing.upstream import TEXT, Plan
from tests.chat_gateway.auth.test_jwt import JWKS, Clock, Key
from tests.chat_gateway.conftest import LocalService, gateway_env, local_gateway, sse_events, wait_for
from tests.conftest import redis_url_or_skip, serve

_T = TypeVar("_T")

ADMIN_KEY = "admin-key"
ISSUER = "https://idp.example.test/"
AUDIENCE = "durable-chat"


@pytest.fixture(scope="module")
def persistence_app(persistence_app_on_both: LocalService) -> LocalService:
    """What an adversary with an ordinary key tries must fail on both databases."""
    return persistence_app_on_both


@pytest.fixture(scope="module")
def persistence(persistence_on_both: Service) -> Service:
    """The tests that read persistence's log run it in a process, on both databases too."""
    return persistence_on_both


@pytest.fixture(scope="module")
def idp(persistence_app: LocalService) -> Iterator[tuple[JWKS, Key]]:
    """An identity provider of its own for each database's run: its tests rotate its keys."""
    key = Key("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")
    state = JWKS(keys=[key.jwk()])
    app = FastAPI()

    @app.get("/jwks.json")
    async def jwks() -> Response:
        state.fetches += 1
        return Response(json.dumps({"keys": state.keys}), media_type="application/json")

    with serve(app) as url:
        state.url = f"{url}/jwks.json"
        yield state, key


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    persistence_app: LocalService,
    _fake_openai_server: tuple[FastAPI, str],
    idp: tuple[JWKS, Key],
) -> Iterator[LocalService]:
    with local_gateway(
        tmp_path_factory.mktemp("identity"),
        persistence_app,
        _fake_openai_server[1],
        CHAT_ADMIN_KEYS=ADMIN_KEY,
        KEY_CACHE_SECONDS="0.3",
        AUTH_FAILURE_LIMIT="1000/minute",  # every test here refuses credentials from one address
        JWT_ISSUER=ISSUER,
        JWT_AUDIENCE=AUDIENCE,
        JWT_JWKS_URL=idp[0].url,
        JWT_JWKS_MIN_REFRESH_SECONDS="0.2",
        RATE_LIMIT="1000/minute",
    ) as gateway:
        yield gateway


@pytest.fixture
def admin(gateway: LocalService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": ADMIN_KEY}, timeout=30) as client:
        yield client


def _user_key(admin: httpx.Client, user_id: str, **fields: Any) -> str:
    created = admin.post("/admin/keys", json={"user_id": user_id} | fields)
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


def _client(gateway: LocalService, key: str) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {key}"}, timeout=30)


def _new_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def _chat(client: httpx.Client, message: str = "hello", **fields: Any) -> dict[str, Any]:
    response = client.post("/chat", json={"message": message} | fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# Bodies for the operations that need one; every other operation is called without.
BODIES = {
    ("PUT", "/chat/sessions/{session_id}"): {"title": "taken over"},
    ("POST", "/v1/conversations/{conversation_id}"): {"metadata": {"taken": "over"}},
    ("POST", "/v1/conversations/{conversation_id}/items"): {"items": [{"role": "user", "content": "hi"}]},
}
PLACEHOLDERS = ("{session_id}", "{message_id}", "{response_id}", "{conversation_id}")


def _id_operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        if any(placeholder in path for placeholder in PLACEHOLDERS)
        for method in operations
    ]


def test_another_users_ids_are_404s_on_every_operation_and_change_nothing(
    gateway: LocalService, admin: httpx.Client, fake_openai: FastAPI
) -> None:
    alice, bob = _user_key(admin, _new_user()), _user_key(admin, _new_user())
    with _client(gateway, alice) as as_alice, _client(gateway, bob) as as_bob:
        chat = _chat(as_alice, "the secret of alice")
        ids = {"{session_id}": chat["session_id"], "{message_id}": chat["message_id"]}
        ids |= {"{response_id}": f"resp_{uuid.UUID(chat['message_id']).hex}"}
        ids |= {"{conversation_id}": f"conv_{uuid.UUID(chat['session_id']).hex}"}
        before = as_alice.get(f"/chat/sessions/{chat['session_id']}/export").json()
        operations = _id_operations(as_bob.get("/openapi.json").json())
        assert len(operations) >= 10  # every session and message route of the gateway, as its document lists them
        for method, template in operations:
            path = template
            for placeholder, value in ids.items():
                path = path.replace(placeholder, value)
            response = as_bob.request(method, path, json=BODIES.get((method, template)))
            assert response.status_code == 404, (method, template, response.status_code, response.text)
        # As if they did not exist: the same answer as for ids nobody has.
        missing = as_bob.get(f"/chat/sessions/{uuid.uuid4()}")
        assert as_bob.get(f"/chat/sessions/{chat['session_id']}").json()["detail"].split()[0] == "session"
        assert missing.status_code == 404
        after = as_alice.get(f"/chat/sessions/{chat['session_id']}/export").json()
        assert after == before
        assert after["messages"][1]["content"] == TEXT


def test_lists_search_and_usage_are_the_callers_own(
    gateway: LocalService, admin: httpx.Client, fake_openai: FastAPI
) -> None:
    alice_id, bob_id = _new_user(), _new_user()
    alice, bob = _user_key(admin, alice_id), _user_key(admin, bob_id)
    with _client(gateway, alice) as as_alice, _client(gateway, bob) as as_bob:
        mine = _chat(as_alice, "pelicans of alice")["session_id"]
        _chat(as_bob, "herons of bob")
        assert [s["id"] for s in as_alice.get("/chat/sessions").json()["items"]] == [mine]
        assert as_bob.get("/chat/search", params={"q": "pelicans"}).json()["items"] == []
        assert as_alice.get("/chat/search", params={"q": "pelicans"}).json()["items"]
        for path in ("/chat/sessions", "/usage"):
            refused = as_bob.get(path, params={"user_id": alice_id})
            assert refused.status_code == 403, path
            assert as_bob.get(path, params={"user_id": bob_id}).status_code == 200
        assert as_bob.post("/chat", json={"message": "hi", "user_id": alice_id}).status_code == 403
        assert as_bob.get("/admin/keys").status_code == 403
        report = as_alice.get("/usage").json()
        assert report["user_id"] == alice_id
        assert report["total_tokens"] > 0
        assert {row["user_id"] for row in report["rows"]} == {alice_id}
    everyone = admin.get("/usage").json()
    assert {alice_id, bob_id} <= {row["user_id"] for row in everyone["rows"]}
    assert admin.get("/usage", params={"user_id": bob_id}).json()["user_id"] == bob_id


def test_a_user_cannot_write_into_another_users_session(
    gateway: LocalService, admin: httpx.Client, fake_openai: FastAPI
) -> None:
    alice, bob = _user_key(admin, _new_user()), _user_key(admin, _new_user())
    with _client(gateway, alice) as as_alice, _client(gateway, bob) as as_bob:
        session = _chat(as_alice)["session_id"]
        assert as_bob.post("/chat", json={"message": "mine now", "session_id": session}).status_code == 404
        completion = {"model": "fake-model", "messages": [{"role": "user", "content": "mine now"}]}
        taken = as_bob.post("/v1/chat/completions", json=completion, headers={"X-Session-Id": session})
        assert taken.status_code == 404
        assert taken.json()["error"]["type"] == "not_found_error"
        # The same session name, from two users, is two sessions.
        named = {"X-Session-Id": "my-notes"}
        first = as_alice.post("/v1/chat/completions", json=completion, headers=named).headers["x-session-id"]
        second = as_bob.post("/v1/chat/completions", json=completion, headers=named).headers["x-session-id"]
        assert first != second
        assert len(as_alice.get(f"/chat/sessions/{session}/messages").json()["items"]) == 2


def test_made_up_keys_are_refused_before_they_count(gateway: LocalService, admin: httpx.Client) -> None:
    refused = {
        httpx.post(f"{gateway.url}/chat", json={"message": "hi"}, headers={"x-api-key": f"made-up-{n}"}).status_code
        for n in range(70)
    }
    assert refused == {401}
    assert (
        httpx.post(f"{gateway.url}/chat", json={"message": "hi"}, headers={"x-api-key": "dck_nope"}).status_code == 401
    )


def test_every_spelling_of_one_key_is_one_budget(gateway: LocalService, admin: httpx.Client) -> None:
    key = _user_key(admin, _new_user(), limits={"requests_per_minute": 3})
    spellings = ["Bearer", "bearer", "BEARER", "bEaReR", "x-api-key"]
    statuses = []
    for spelling in spellings:
        headers = {"x-api-key": key} if spelling == "x-api-key" else {"authorization": f"{spelling} {key}"}
        response = httpx.get(f"{gateway.url}/chat/sessions", headers=headers)
        statuses.append(response.status_code)
    assert statuses == [200, 200, 200, 429, 429]
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert int(response.headers["retry-after"]) >= 1


def test_a_revoked_key_stops_working_within_seconds(gateway: LocalService, admin: httpx.Client) -> None:
    user_id = _new_user()
    key = _user_key(admin, user_id, name="laptop")
    with _client(gateway, key) as as_user:
        assert as_user.get("/chat/sessions").status_code == 200
        listed = admin.get("/admin/keys", params={"user_id": user_id}).json()
        assert [(k["name"], k["revoked_at"]) for k in listed] == [("laptop", None)]
        assert listed[0]["last_used_at"] is not None
        assert admin.delete(f"/admin/keys/{listed[0]['id']}").status_code == 200
        wait_for(lambda: as_user.get("/chat/sessions").status_code == 401, timeout=5)


def test_jwt_users_are_scoped_and_keys_rotate_without_a_restart(
    gateway: LocalService, idp: tuple[JWKS, Key], fake_openai: FastAPI
) -> None:
    state, key = idp
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": _new_user(), "exp": now + 300}
    with _client(gateway, key.sign(claims)) as as_carol:
        chat = _chat(as_carol)
        assert as_carol.get("/chat/sessions").json()["items"][0]["user_id"] == claims["sub"]
    for bad in (claims | {"exp": now - 10}, claims | {"aud": "other"}, claims | {"iss": "https://evil.test/"}):
        response = httpx.get(f"{gateway.url}/chat/sessions", headers={"authorization": f"Bearer {key.sign(bad)}"})
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_token"
    dave = claims | {"sub": _new_user()}
    with _client(gateway, key.sign(dave)) as as_dave:
        assert as_dave.get(f"/chat/sessions/{chat['session_id']}").status_code == 404
    rotated = Key("rsa-2", rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")
    new_token = rotated.sign(claims)
    assert (
        httpx.get(f"{gateway.url}/chat/sessions", headers={"authorization": f"Bearer {new_token}"}).status_code == 401
    )
    state.keys = [key.jwk(), rotated.jwk()]
    headers = {"authorization": f"Bearer {new_token}"}
    wait_for(lambda: httpx.get(f"{gateway.url}/chat/sessions", headers=headers).status_code == 200, timeout=5)


def test_concurrent_starts_pass_a_token_budget_by_at_most_one_answer(
    gateway: LocalService, admin: httpx.Client, fake_openai: FastAPI
) -> None:
    user_id = _new_user()
    budget, max_tokens = 60, 8
    key = _user_key(admin, user_id, limits={"tokens_per_day": budget})
    responses: list[httpx.Response] = []

    def start() -> None:
        body = {"message": "hi", "options": {"max_tokens": max_tokens}}
        responses.append(httpx.post(f"{gateway.url}/chat", json=body, headers={"x-api-key": key}, timeout=30))

    threads = [threading.Thread(target=start) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [r for r in responses if r.status_code == 429]
    assert refused
    assert {r.status_code for r in responses} == {200, 429}
    assert refused[0].json()["code"] == "budget_exceeded"
    assert int(refused[0].headers["retry-after"]) >= 1
    assert refused[0].headers["x-ratelimit-limit-tokens"] == str(budget)
    assert "x-ratelimit-remaining" in refused[0].headers
    used = admin.get("/usage", params={"user_id": user_id}).json()["total_tokens"]
    # Starts are refused while the answers running reserve the rest: the day may end under the budget, never
    # over it by more than one answer (its max_tokens and its prompt: "hi" is a token by either count).
    assert used <= budget + max_tokens + 1
    # A running answer is never cut by the budget: every admitted one completed.
    assert all(r.json()["status"] == "complete" for r in responses if r.status_code == 200)


@pytest.mark.slow  # runs the terminal client in processes
def test_the_openai_sdk_and_the_terminal_client_work_with_a_user_key(
    gateway: LocalService, admin: httpx.Client, fake_openai: FastAPI, tmp_path: Path
) -> None:
    user_id = _new_user()
    key = _user_key(admin, user_id)
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=key)
    completion = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == TEXT
    stream = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == TEXT
    command = [sys.executable, "-m", "chat_gateway.cli", "--url", gateway.url, "--key", key]
    listed = subprocess.run([*command, "sessions"], capture_output=True, text=True, timeout=60, check=True)
    assert len(listed.stdout.splitlines()) == 2
    chatted = subprocess.run(command, input="one more\n", capture_output=True, text=True, timeout=60, check=True)
    assert TEXT in chatted.stdout
    with _client(gateway, key) as as_user:
        sessions = as_user.get("/chat/sessions").json()["items"]
    assert len(sessions) == 3
    assert {s["user_id"] for s in sessions} == {user_id}


@pytest.mark.slow  # runs the terminal client in processes
def test_admins_manage_keys_with_the_terminal_client(gateway: LocalService) -> None:
    command = [sys.executable, "-m", "chat_gateway.cli", "--url", gateway.url, "--key", ADMIN_KEY, "admin"]
    user_id = _new_user()
    created = subprocess.run(
        [*command, "keys", "create", "--user", user_id, "--name", "ci", "--budget", "5000/day"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    key = created.stdout.strip()
    assert key.startswith("dck_")
    listed = subprocess.run([*command, "keys", "list", "--user", user_id], capture_output=True, text=True, check=True)
    key_id = listed.stdout.split()[0]
    assert "active" in listed.stdout
    with _client(gateway, key) as as_user:
        assert as_user.get("/chat/sessions").status_code == 200
        subprocess.run([*command, "keys", "revoke", key_id], capture_output=True, text=True, check=True)
        wait_for(lambda: as_user.get("/chat/sessions").status_code == 401, timeout=5)
    limits = subprocess.run(
        [*command, "limits", "--user", user_id, "--rpm", "7"], capture_output=True, text=True, check=True
    )
    assert json.loads(limits.stdout)["requests_per_minute"] == 7


def test_a_reattaching_client_of_another_user_sees_nothing(
    gateway: LocalService, admin: httpx.Client, fake_openai: FastAPI
) -> None:
    alice, bob = _user_key(admin, _new_user()), _user_key(admin, _new_user())
    with _client(gateway, alice) as as_alice, _client(gateway, bob) as as_bob:
        message_id = _chat(as_alice)["message_id"]
        with as_alice.stream("GET", f"/chat/messages/{message_id}/stream") as own:
            text = "".join(event.data["text"] for event in sse_events(own) if event.event == "delta")
        assert text == TEXT
        with as_bob.stream("GET", f"/chat/messages/{message_id}/stream") as other:
            assert other.status_code == 404


def test_concurrent_requests_of_one_user_get_exactly_their_rate(gateway: LocalService, admin: httpx.Client) -> None:
    key = _user_key(admin, _new_user(), limits={"requests_per_minute": 5})
    statuses: list[int] = []

    def call() -> None:
        statuses.append(httpx.get(f"{gateway.url}/chat/sessions", headers={"x-api-key": key}, timeout=30).status_code)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 5 + [429] * 15


def test_with_redis_a_users_rate_holds_across_gateways(
    tmp_path: Path, persistence_app: LocalService, fake_openai_url: str, admin: httpx.Client
) -> None:
    settings = {"CHAT_ADMIN_KEYS": ADMIN_KEY, "RATE_LIMIT_STORAGE": redis_url_or_skip()}
    key = _user_key(admin, _new_user(), limits={"requests_per_minute": 4})
    with contextlib.ExitStack() as stack:
        gateways = [
            stack.enter_context(local_gateway(tmp_path, persistence_app, fake_openai_url, **settings))
            for number in range(2)
        ]
        statuses = [
            httpx.get(f"{gateways[n % 2].url}/chat/sessions", headers={"x-api-key": key}).status_code for n in range(6)
        ]
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_nobody_takes_a_session_id_of_their_choosing_or_computes_anothers_name(
    gateway: LocalService, admin: httpx.Client, fake_openai: FastAPI
) -> None:
    """Session squatting: a raw UUID must name an existing session (ids are the server's), a name maps to an id
    through a keyed hash, and an admin acting for a user (or for nobody) never writes into another's session."""
    alice_id, bob_id = _new_user(), _new_user()
    bob = _user_key(admin, bob_id)
    completion = {"model": "fake-model", "messages": [{"role": "user", "content": "bob's trap"}]}
    with _client(gateway, bob) as as_bob:
        # The public uuid5 of alice's name that ids used to be, and any id bob picks: neither is created.
        for chosen in (
            str(uuid.uuid5(uuid.UUID("0b9e4f3a-55c1-4c52-9a57-b1a1f1d6c0de"), f"{alice_id}\x00project-x")),
            str(uuid.uuid4()),
        ):
            squat = as_bob.post("/v1/chat/completions", json=completion, headers={"X-Session-Id": chosen})
            assert squat.status_code == 404, squat.text
            assert as_bob.get(f"/chat/sessions/{chosen}").status_code == 404
        bobs = as_bob.post("/v1/chat/completions", json=completion, headers={"X-Session-Id": "ticket-4711"})
        bobs_session = bobs.headers["x-session-id"]
    # Alice's (through an admin's integration) and an admin's own chats under the same names: their own sessions.
    named = {"X-Session-Id": "ticket-4711"}
    for acting_for in ({"user": alice_id}, {}):
        answered = admin.post("/v1/chat/completions", json=completion | acting_for, headers=named)
        assert answered.status_code == 200, answered.text
        assert answered.headers["x-session-id"] != bobs_session
        # Bob's session, named by its id: not theirs to write into.
        into_bobs = admin.post(
            "/v1/chat/completions", json=completion | acting_for, headers={"X-Session-Id": bobs_session}
        )
        assert into_bobs.status_code == 404, into_bobs.text
    with _client(gateway, bob) as as_bob:
        assert len(as_bob.get(f"/chat/sessions/{bobs_session}/messages").json()["items"]) == 2


def test_user_ids_of_any_text_are_isolated(gateway: LocalService, admin: httpx.Client, fake_openai: FastAPI) -> None:
    name = _new_user()
    spaced, accented = _user_key(admin, f" {name}"), _user_key(admin, f"{name}-josé")
    owner = _user_key(admin, name)
    with _client(gateway, owner) as as_owner, _client(gateway, spaced) as as_spaced:
        _chat(as_owner, "mine")
        assert as_spaced.get("/chat/sessions").json()["items"] == []
    with _client(gateway, accented) as as_accented:
        assert _chat(as_accented)["status"] == "complete"
        assert [s["user_id"] for s in as_accented.get("/chat/sessions").json()["items"]] == [f"{name}-josé"]


def test_odd_credentials_are_401s(gateway: LocalService, idp: tuple[JWKS, Key]) -> None:
    _, key = idp
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x" * 256, "exp": int(time.time()) + 300}
    for credential in (key.sign(claims), "dck_" + "a" * 600, "dck_"):
        response = httpx.post(f"{gateway.url}/chat", json={"message": "hi"}, headers={"x-api-key": credential})
        assert response.status_code == 401, credential[:20]


def test_over_budget_nothing_reaches_the_upstream_and_resumes_are_refused(
    gateway: LocalService, admin: httpx.Client, fake_openai: FastAPI
) -> None:
    key = _user_key(admin, _new_user(), limits={"tokens_per_day": 5})
    completion = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    with _client(gateway, key) as as_user:
        first = as_user.post("/v1/chat/completions", json=completion)
        assert first.status_code == 200
        cancelled = _chat_message_id(as_user, first.headers["x-session-id"])
        asked = len(fake_openai.state.requests)
        refused = as_user.post("/v1/chat/completions", json=completion)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert len(fake_openai.state.requests) == asked  # refused before any upstream request
        resumed = as_user.post(f"/chat/messages/{cancelled}/resume")
        assert resumed.status_code in (409, 429)  # complete: nothing to resume; else over budget
        limits = admin.get("/usage").json()
        assert limits["total_tokens"] > 0


def test_responses_and_conversations_are_a_users_own_and_within_their_budget(
    gateway: LocalService, admin: httpx.Client, fake_openai: FastAPI
) -> None:
    key = _user_key(admin, _new_user(), limits={"tokens_per_day": 5})
    with _client(gateway, key) as as_user, _client(gateway, _user_key(admin, _new_user())) as as_other:
        first = as_user.post("/v1/responses", json={"model": "fake-model", "input": "hi", "max_output_tokens": 50})
        assert first.status_code == 200, first.text
        asked = len(fake_openai.state.requests)
        refused = as_user.post("/v1/responses", json={"model": "fake-model", "input": "more", "background": True})
        assert (refused.status_code, refused.json()["error"]["code"]) == (429, "budget_exceeded")
        assert len(fake_openai.state.requests) == asked  # refused before any upstream request
        conversation = as_user.post("/v1/conversations", json={}).json()
        chained = {"model": "fake-model", "input": "and?", "previous_response_id": first.json()["id"]}
        assert as_other.post("/v1/responses", json=chained).status_code == 404
        assert as_other.get(f"/v1/conversations/{conversation['id']}").status_code == 404
        on = {"model": "fake-model", "input": "and?", "conversation": conversation["id"]}
        assert as_other.post("/v1/responses", json=on).status_code == 404
        usage = as_user.get("/usage").json()
        assert usage["total_tokens"] > 0


def _chat_message_id(client: httpx.Client, session_id: str) -> str:
    items = client.get(f"/chat/sessions/{session_id}/messages").json()["items"]
    return str(items[-1]["id"])


@pytest.fixture
def cache_clock(gateway: LocalService) -> Iterator[Clock]:
    """The gateway's cached keys and limits on a clock the test moves on: KEY_CACHE_SECONDS pass without waiting."""
    clock = Clock()
    auth: Authenticator = gateway.app.state.auth
    gateway.app.state.auth = Authenticator(auth.settings, auth.persistence, auth.limiter, auth.tokens, clock)
    yield clock
    gateway.app.state.auth = auth


def test_a_failed_answer_resumed_by_its_user_fits_in_their_budget(
    gateway: LocalService, admin: httpx.Client, fake_openai: FastAPI, cache_clock: Clock
) -> None:
    user_id = _new_user()
    key = _user_key(admin, user_id)  # the user's limits apply: the key has none of its own
    admin.put(f"/admin/users/{user_id}/limits", json={"tokens_per_day": 1000})
    fake_openai.state.plans.append(Plan(delay=0.05))
    with _client(gateway, key) as as_user:
        body = {"message": "hi", "stream": True, "options": {"max_tokens": 20}}
        with as_user.stream("POST", "/chat", json=body) as started:
            events = sse_events(started)
            message_id = next(e.data for e in events if e.event == "start")["message_id"]
            next(e for e in events if e.event == "delta")  # some text is spent: the day's one token is used up
            assert as_user.post(f"/chat/messages/{message_id}/cancel").json()["status"] == "failed"
        admin.put(f"/admin/users/{user_id}/limits", json={"tokens_per_day": 1})
        cache_clock.now += 0.5  # the gateway's cached limits (KEY_CACHE_SECONDS: 0.3) run out
        refused = as_user.post(f"/chat/messages/{message_id}/resume")
        assert refused.status_code == 429, refused.text
        assert refused.json()["code"] == "budget_exceeded"
        admin.put(f"/admin/users/{user_id}/limits", json={})
        cache_clock.now += 0.5
        assert as_user.post(f"/chat/messages/{message_id}/resume").json()["status"] == "complete"
    report = admin.get("/usage", params={"user_id": user_id}).json()
    assert report["rows"][0]["pending_answers"] == 0
    assert report["by_model"][0]["answers"] == 1


@pytest.mark.slow  # runs the terminal client in processes
def test_admin_limits_change_only_what_is_given(gateway: LocalService, admin: httpx.Client) -> None:
    user_id = _new_user()
    admin.put(f"/admin/users/{user_id}/limits", json={"tokens_per_day": 500})
    command = [sys.executable, "-m", "chat_gateway.cli", "--url", gateway.url, "--key", ADMIN_KEY, "admin", "limits"]
    changed = subprocess.run([*command, "--user", user_id, "--rpm", "9"], capture_output=True, text=True, check=True)
    assert json.loads(changed.stdout) == {"requests_per_minute": 9, "tokens_per_day": 500, "tokens_per_month": None}
    wrong = subprocess.run([*command, "--user", user_id, "--budget", "lots"], capture_output=True, text=True)
    assert wrong.returncode == 2
    assert "N/day or N/month" in wrong.stderr


def test_a_users_conversation_is_never_found_for_another_user(
    gateway: LocalService, admin: httpx.Client, fake_openai: FastAPI
) -> None:
    """Two users sending the same conversation without a session header each go on in their own session."""
    alice, bob = (_client(gateway, _user_key(admin, _new_user())) for _ in range(2))
    first = [{"role": "user", "content": "Where is Lyon?"}]
    asked = alice.post("/v1/chat/completions", json={"model": "fake-model", "messages": first})
    answer = asked.json()["choices"][0]["message"]["content"]
    follow_up = [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "And Paris?"}]
    theirs = bob.post("/v1/chat/completions", json={"model": "fake-model", "messages": follow_up})
    mine = alice.post("/v1/chat/completions", json={"model": "fake-model", "messages": follow_up})
    assert mine.headers["x-session-id"] == asked.headers["x-session-id"]
    assert theirs.headers["x-session-id"] != asked.headers["x-session-id"]
    listed = bob.get(f"/chat/sessions/{theirs.headers['x-session-id']}/messages")
    assert listed.status_code == 200, listed.text
    assert [m["content"] for m in listed.json()["items"]] == [
        "And Paris?",
        TEXT,
    ]


# Issue 36: built-in owners are nobody's identity, and refused credentials cost (almost) nothing.


def test_reserved_user_ids_get_no_key_no_limits_and_no_token(
    gateway: LocalService, admin: httpx.Client, idp: tuple[JWKS, Key], fake_openai: FastAPI
) -> None:
    _, key = idp
    # What "anonymous" would have read: the chats an admin starts without naming a user are filed under it.
    shared_chat = _chat(admin, "an admin's chat, for nobody in particular")
    assert admin.get(f"/chat/sessions/{shared_chat['session_id']}").json()["user_id"] == DEFAULT_USER
    assert {"anonymous", "legacy"} == RESERVED_USERS  # every built-in owner the code files chats under
    for user_id in sorted(RESERVED_USERS):
        created = admin.post("/admin/keys", json={"user_id": user_id})
        assert created.status_code == 422, created.text
        assert created.json()["errors"][0]["type"] == "reserved_user_id"
        assert "built-in owner" in created.json()["detail"]
        limits = admin.put(f"/admin/users/{user_id}/limits", json={"requests_per_minute": 1000})
        assert limits.status_code == 422, limits.text
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": user_id, "exp": int(time.time()) + 300}
        listed = httpx.get(f"{gateway.url}/chat/sessions", headers={"authorization": f"Bearer {key.sign(claims)}"})
        assert listed.status_code == 401, listed.text
        assert listed.json()["code"] == "invalid_token"
    # Ids that merely look alike are ordinary users.
    assert admin.post("/admin/keys", json={"user_id": "Anonymous"}).status_code == 201


def test_one_rule_for_user_ids_at_every_edge(gateway: LocalService, admin: httpx.Client, idp: tuple[JWKS, Key]) -> None:
    """1 to 255 characters, none a control character: a key, a token's claim or a chat's user_id outside it is a
    clear 4xx, never a 404 everywhere; inside it, any text works end to end (non-ASCII at full length too)."""
    _, key = idp
    for bad in ("alice\nbob", "tab\there", "x" * 256, ""):
        assert admin.post("/admin/keys", json={"user_id": bad}).status_code == 422, repr(bad)
        assert admin.post("/chat", json={"message": "hi", "user_id": bad}).status_code == 422, repr(bad)
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": bad, "exp": int(time.time()) + 300}
        refused = httpx.get(f"{gateway.url}/chat/sessions", headers={"authorization": f"Bearer {key.sign(claims)}"})
        assert (refused.status_code, refused.json()["code"]) == (401, "invalid_token"), repr(bad)
    longest = "é" * 254 + "ü"
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": longest, "exp": int(time.time()) + 300}
    with httpx.Client(
        base_url=gateway.url, headers={"authorization": f"Bearer {key.sign(claims)}"}, timeout=30
    ) as user:
        assert user.get("/chat/sessions").status_code == 200
        assert user.get("/usage").status_code == 200


def _health_while(url: str, send: Callable[[], _T]) -> tuple[_T, float]:
    """``send()``'s result, and the longest a /health request made meanwhile took."""
    slowest = 0.0
    done = threading.Event()
    result: list[_T] = []

    def run() -> None:
        try:
            result.append(send())
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    with httpx.Client(base_url=url, timeout=10) as client:
        while not done.wait(0.02):
            started = time.monotonic()
            assert client.get("/health").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
    thread.join()
    assert result, "send() failed"
    return result[0], slowest


def _raw_request(url: str, headers: bytes) -> tuple[bytes, float]:
    """The status line a request with these raw header lines got, and how long it took: sent over a socket of
    its own, since the server may answer and close before the client has sent it all."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        request = b"GET /chat/sessions HTTP/1.1\r\nhost: test\r\n" + headers + b"\r\n"

        def write() -> None:
            with contextlib.suppress(OSError):  # refused midway: the server closed the connection
                sock.sendall(request)

        writer = threading.Thread(target=write)
        writer.start()
        answer = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in answer and (chunk := sock.recv(4096)):
                answer += chunk
        elapsed = time.monotonic() - started
        with contextlib.suppress(OSError):  # unblocks the writer, if the server has not reset the connection
            sock.shutdown(socket.SHUT_RDWR)
        writer.join()
    return answer.split(b"\r\n", 1)[0], elapsed


@pytest.mark.serial  # a time limit of its own: make test runs it alone
def test_huge_headers_and_credentials_are_refused_at_once_and_stall_nobody(
    gateway: LocalService, idp: tuple[JWKS, Key]
) -> None:
    huge = 8 * 1024 * 1024
    # One 8 MiB header, as a user key and as a bearer token (JWT mode is on too): cut off while it arrives.
    for header in (b"x-api-key: dck_" + b"a" * huge, b"authorization: Bearer " + b"e" * huge + b".e.e"):
        (status, elapsed), health = _health_while(gateway.url, partial(_raw_request, gateway.url, header + b"\r\n"))
        assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
        assert elapsed < 1, elapsed
        assert health < 1, health
    # Headers past 32 KiB in all, each of them small: the app's own limit, in the one error shape.
    many = {f"x-filler-{n}": "f" * 1000 for n in range(40)}
    refused = httpx.get(f"{gateway.url}/chat/sessions", headers=many | {"x-api-key": ADMIN_KEY})
    assert refused.status_code == 431
    assert refused.json()["code"] == "headers_too_large"
    # Under the header limit but longer than any credential (8 KiB): 401, unread. A JWT-shaped one included.
    _, key = idp
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": _new_user(), "exp": int(time.time()) + 300, "pad": "p" * 9000}
    for credential in ("dck_" + "a" * 20_000, key.sign(claims), "h." + "p" * 20_000 + ".s"):
        started = time.monotonic()
        response = httpx.get(f"{gateway.url}/chat/sessions", headers={"authorization": f"Bearer {credential}"})
        assert response.status_code == 401, response.text
        assert "8192" in response.json()["detail"]
        assert time.monotonic() - started < 1


@pytest.fixture(scope="module")
def strict_gateway(
    tmp_path_factory: pytest.TempPathFactory, persistence: Service, _fake_openai_server: tuple[FastAPI, str]
) -> Iterator[Service]:
    """Keys mode with the failed-authentication limit low enough to reach, and keys cached as by default."""
    tmp = tmp_path_factory.mktemp("strict")
    env = gateway_env(
        tmp,
        persistence.url,
        _fake_openai_server[1],
        CHAT_ADMIN_KEYS=ADMIN_KEY,
        AUTH_FAILURE_LIMIT="20/minute",
        RATE_LIMIT="1000/minute",
    )
    service = Service.uvicorn("chat_gateway.main:create_app", env, tmp / "gateway.log").start()
    yield service
    service.kill(signal.SIGTERM)


def _lookups(persistence: Service) -> int:
    """Key lookups persistence has answered, from its request log."""
    return persistence.output().count('"path": "/keys/identify"')


@pytest.mark.slow  # reads the persistence process's log
def test_made_up_user_keys_cost_few_lookups_and_get_429s_past_the_failure_limit(
    strict_gateway: LocalService, persistence: Service
) -> None:
    with httpx.Client(base_url=strict_gateway.url, headers={"x-api-key": ADMIN_KEY}) as admin:
        valid = _user_key(admin, _new_user())
    before = _lookups(persistence)
    # The same unknown key again: its refusal is cached, it is looked up once.
    same = [httpx.get(f"{strict_gateway.url}/chat/sessions", headers={"x-api-key": "dck_unknown"}) for _ in range(5)]
    assert [r.status_code for r in same] == [401] * 5
    assert _lookups(persistence) - before == 1
    statuses = [
        httpx.get(f"{strict_gateway.url}/chat/sessions", headers={"x-api-key": f"dck_{uuid.uuid4().hex}"}).status_code
        for _ in range(300)
    ]
    # 20 refusals a minute from one address, the 5 above included; then 429s that look nothing up.
    assert statuses[:15] == [401] * 15
    assert set(statuses[15:]) == {429}
    assert _lookups(persistence) - before <= 20
    blocked = httpx.get(f"{strict_gateway.url}/chat/sessions", headers={"x-api-key": valid})
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    # Another address is not held up, and health never is.
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as elsewhere:
        assert elsewhere.get(f"{strict_gateway.url}/chat/sessions", headers={"x-api-key": valid}).status_code == 200
    assert httpx.get(f"{strict_gateway.url}/health").status_code == 200
