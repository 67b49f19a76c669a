from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import SecretStr

from shared import ServiceSettings, SettingsError, key_matches, load_settings, split_keys


class ExampleSettings(ServiceSettings):
    service_name: ClassVar[str] = "example"

    api_key: SecretStr
    token: SecretStr | None = None
    port: int = 8000


@pytest.fixture(autouse=True)
def secrets_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("API_KEY", "API_KEY_FILE", "TOKEN", "TOKEN_FILE", "PORT"):
        monkeypatch.delenv(name, raising=False)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    monkeypatch.setenv("SECRETS_DIR", str(secrets))
    return secrets


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "from-env")
    assert load_settings(ExampleSettings).api_key.get_secret_value() == "from-env"


def test_secret_from_name_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "docker-secret"
    secret.write_text("from-file\n")
    monkeypatch.setenv("API_KEY_FILE", str(secret))
    assert load_settings(ExampleSettings).api_key.get_secret_value() == "from-file"


def test_secret_from_local_secrets_dir(secrets_dir: Path) -> None:
    (secrets_dir / "api_key.txt").write_text("local\n")
    settings = load_settings(ExampleSettings)
    assert settings.api_key.get_secret_value() == "local"
    assert settings.token is None


def test_environment_wins_over_local_file(monkeypatch: pytest.MonkeyPatch, secrets_dir: Path) -> None:
    (secrets_dir / "api_key.txt").write_text("local")
    monkeypatch.setenv("API_KEY", "env")
    assert load_settings(ExampleSettings).api_key.get_secret_value() == "env"


def test_name_and_name_file_together_are_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("x")
    monkeypatch.setenv("API_KEY", "y")
    monkeypatch.setenv("API_KEY_FILE", str(secret))
    with pytest.raises(SettingsError, match="API_KEY and API_KEY_FILE are both set"):
        load_settings(ExampleSettings)


def test_missing_secret_says_which_and_where(secrets_dir: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(ExampleSettings)
    message = str(info.value)
    assert message.startswith("example: missing secret API_KEY")
    assert "API_KEY_FILE" in message
    assert str(secrets_dir / "api_key.txt") in message
    assert "\n" not in message


@pytest.mark.parametrize("content", [None, ""])
def test_name_file_must_exist_and_not_be_empty(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("API_KEY_FILE", str(path))
    with pytest.raises(SettingsError, match="API_KEY_FILE names"):
        load_settings(ExampleSettings)


def test_invalid_plain_setting_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "k")
    monkeypatch.setenv("PORT", "eighty")
    with pytest.raises(SettingsError, match="invalid setting PORT"):
        load_settings(ExampleSettings)


def test_secret_values_are_not_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "very-secret")
    assert "very-secret" not in repr(load_settings(ExampleSettings))


def test_split_keys_allows_rotation() -> None:
    assert split_keys(SecretStr(" new \n\n# retired soon\nold\n")) == ("new", "old")
    assert split_keys(None) == ()


def test_key_matches() -> None:
    keys = ("new", "old")
    assert key_matches("old", keys)
    assert not key_matches("ol", keys)
    assert not key_matches("", keys)
    assert not key_matches(None, keys)
    assert not key_matches("x", ())
