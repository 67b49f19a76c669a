import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from chat_gateway.config import Settings, is_loopback, uvicorn_host
from chat_gateway.main import create_app


@pytest.mark.parametrize("mode", ["auto", "exact", "vllm", "prefix", "restart"])
def test_how_the_upstream_continues_is_one_of_its_methods_or_auto(mode: str) -> None:
    """What each method sends and cuts: test_prompt.py; how auto decides: test_upstream_probe.py."""
    assert Settings(api_key=SecretStr("k"), upstream_continuation=mode).upstream_continuation == mode


@pytest.mark.parametrize("value", ["EXACT", "continue", ""])
def test_an_unknown_continuation_method_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="upstream_continuation"):
        Settings(api_key=SecretStr("k"), upstream_continuation=value)


@pytest.mark.parametrize(
    ("argv", "environ", "host"),
    [
        (["/app/.venv/bin/uvicorn", "chat_gateway.main:create_app", "--factory", "--port", "8100"], {}, "127.0.0.1"),
        (["uvicorn", "app", "--host", "0.0.0.0", "--port", "8100"], {}, "0.0.0.0"),
        (["/usr/lib/python3/site-packages/uvicorn/__main__.py", "app", "--host=::"], {}, "::"),
        (["uvicorn", "app", "--host", "10.0.0.5", "--host", "127.0.0.1"], {}, "127.0.0.1"),  # click: the last
        (["uvicorn", "app"], {"UVICORN_HOST": "0.0.0.0"}, "0.0.0.0"),
        (["uvicorn", "app", "--host", "127.0.0.1"], {"UVICORN_HOST": "0.0.0.0"}, "127.0.0.1"),
        (["uvicorn", "app", "--uds", "/run/gateway.sock"], {}, None),  # a socket it was given: not its to say
        (["uvicorn", "app", "--fd=3"], {}, None),
        (["/usr/bin/pytest", "--host", "0.0.0.0"], {}, None),  # not uvicorn's command line
        (["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-b", "0.0.0.0:8100"], {}, None),
        ([], {}, None),
    ],
)
def test_the_address_uvicorn_binds_is_read_from_its_command_line(
    argv: list[str], environ: dict[str, str], host: str | None
) -> None:
    assert uvicorn_host(argv, environ) == host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("gateway.example.com", False),  # a name could be any address: only localhost is taken at its word
        ("", False),
    ],
)
def test_only_loopback_addresses_count_as_this_machine(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


OPEN = {"api_key": SecretStr("k")}
# What would decide the mode or the address from outside the test: a developer's keys, their shell's HOST.
OUTSIDE = ("CHAT_ADMIN_KEYS", "CHAT_API_KEYS", "JWT_JWKS_URL", "JWT_PUBLIC_KEY", "HOST", "UVICORN_HOST", "ALLOW_OPEN")


@pytest.fixture
def nothing_from_outside(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in OUTSIDE:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"{name}_FILE", raising=False)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path))


@pytest.mark.parametrize(
    ("settings", "launched_on", "refused"),
    [
        (OPEN, "127.0.0.1", False),  # `make run`, and every test that starts a gateway
        (OPEN, None, False),  # launched otherwise, nothing said: uvicorn's own default is loopback
        (OPEN, "0.0.0.0", True),
        (OPEN | {"host": "0.0.0.0"}, None, True),  # another server, told by HOST (as the image says)
        (OPEN | {"host": "0.0.0.0"}, "127.0.0.1", False),  # uvicorn's command line is what was bound
        (OPEN | {"allow_open": True}, "0.0.0.0", False),
        (OPEN | {"chat_admin_keys": SecretStr("admin")}, "0.0.0.0", False),
        (OPEN | {"chat_api_keys": SecretStr("admin")}, "0.0.0.0", False),
        (OPEN | {"jwt_public_key": SecretStr("pem"), "jwt_issuer": "i", "jwt_audience": "a"}, "0.0.0.0", False),
    ],
)
@pytest.mark.usefixtures("nothing_from_outside")
def test_open_mode_is_refused_on_an_address_others_can_reach(
    settings: dict[str, Any], launched_on: str | None, refused: bool
) -> None:
    problem = Settings(**settings).open_exposure(launched_on)
    assert (problem is not None) is refused
    if problem is not None:
        assert problem.startswith(f"open mode on {launched_on or settings['host']} ")
        # What to do instead, each way out named.
        for remedy in ("CHAT_ADMIN_KEYS", "CHAT_ADMIN_KEYS_FILE", "JWT_", "127.0.0.1", "ALLOW_OPEN=true"):
            assert remedy in problem


@pytest.mark.usefixtures("nothing_from_outside")
def test_the_app_is_not_built_open_on_every_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["uvicorn", "chat_gateway.main:create_app", "--factory", "--host", "0.0.0.0"])
    with pytest.raises(SystemExit) as info:
        create_app(Settings(api_key=SecretStr("k")))
    assert info.value.code == 3  # uvicorn's start-up failure: --workers' supervisor stops rather than respawn it
    assert capsys.readouterr().err.startswith("chat_gateway: open mode on 0.0.0.0 (uvicorn's --host), not a loopback")
    assert create_app(Settings(api_key=SecretStr("k"), allow_open=True)).state.settings.allow_open
    assert not create_app(Settings(api_key=SecretStr("k"), chat_admin_keys=SecretStr("a"))).state.settings.open_mode
    monkeypatch.setattr(sys, "argv", ["uvicorn", "chat_gateway.main:create_app", "--factory"])
    assert create_app(Settings(api_key=SecretStr("k"))).state.settings.open_mode  # loopback: as `make run`
