"""Settings loading shared by both services.

Every secret follows one convention: ``NAME`` in the environment, or ``NAME_FILE``
naming a file that holds it (Docker secrets), or ``secrets/name.txt`` for local runs.
"""

import os
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from limits import parse as parse_limit
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

SECRETS_DIR_ENV = "SECRETS_DIR"
NO_RATE_LIMIT = frozenset({"none", "off"})
RATE_LIMIT_STORES = frozenset({"redis", "rediss", "redis+unix"})


class SettingsError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


def _is_secret(field: FieldInfo) -> bool:
    annotation = field.annotation
    return annotation is SecretStr or SecretStr in get_args(annotation)


def secrets_dir() -> Path:
    return Path(os.environ.get(SECRETS_DIR_ENV, "secrets"))


def secret_sources(name: str) -> str:
    """Where a secret is looked for, in the words of an error message."""
    env = name.upper()
    return f"set {env}, or {env}_FILE to a file holding it, or write it to {secrets_dir() / f'{name}.txt'}"


class SecretFilesSource(PydanticBaseSettingsSource):
    """Reads each ``SecretStr`` field from ``NAME_FILE``, else from ``<SECRETS_DIR>/name.txt``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if not _is_secret(field):
                continue
            env = name.upper()
            file_var = f"{env}_FILE"
            explicit = os.environ.get(file_var)
            if explicit and os.environ.get(env):
                raise SettingsError(f"{env} and {file_var} are both set: keep one of them")
            if explicit:
                path = Path(explicit)
                if not path.is_file():
                    raise SettingsError(f"{file_var} names {path}, which is not a readable file")
                value = path.read_text(encoding="utf-8").strip()
                if not value:
                    raise SettingsError(f"{file_var} names {path}, which is empty")
                values[name] = value
                continue
            local = secrets_dir() / f"{name}.txt"
            if local.is_file() and (value := local.read_text(encoding="utf-8").strip()):
                values[name] = value
        return values


def rate_limit_or_none(value: str | None) -> str | None:
    """A limit setting ("60/minute"), checked; None for "none" or "off"."""
    # A word, not an empty value: an empty variable counts as unset, so it would bring the default back.
    if not value or value.strip().lower() in NO_RATE_LIMIT:
        return None
    parse_limit(value)  # raises ValueError naming the bad value
    return value


class ServiceSettings(BaseSettings):
    """Base of each service's settings: environment first, then secret files, then defaults."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)

    service_name: ClassVar[str] = "service"

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Comma-separated origins allowed by CORS; empty: no CORS headers at all.
    cors_origins: str = ""

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Requests per API key (or client address), e.g. "120/minute"; "none": no limit.
    rate_limit: str | None = None
    # Where the counts are kept, shared by every worker and instance: a Redis URL (a secret, since it may
    # hold a password). Unset: in each process.
    rate_limit_storage: SecretStr | None = None

    @field_validator("rate_limit_storage")
    @classmethod
    def _check_rate_limit_storage(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in RATE_LIMIT_STORES:
            raise ValueError("must be a redis://, rediss:// or redis+unix:// URL")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _parse_rate_limit(cls, value: str | None) -> str | None:
        return rate_limit_or_none(value)

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, SecretFilesSource(settings_cls))


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build the settings, turning pydantic's errors into one line that says what to fix."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "?"
            field = cls.model_fields.get(name)
            if error["type"] == "missing" and field is not None and _is_secret(field):
                problems.append(f"missing secret {name.upper()}: {secret_sources(name)}")
            else:
                problems.append(f"invalid setting {name.upper()}: {error['msg']}")
        raise SettingsError(f"{cls.service_name}: " + "; ".join(problems)) from None


def load_settings_or_exit(cls: type[SettingsT]) -> SettingsT:
    """For start-up: a bad configuration ends the process with its one-line message, not a traceback."""
    try:
        return load_settings(cls)
    except SettingsError as exc:
        raise SystemExit(str(exc)) from None


def split_keys(secret: SecretStr | None) -> tuple[str, ...]:
    """Several keys may share one secret, one per line, so that keys can rotate."""
    if secret is None:
        return ()
    lines = (line.strip() for line in secret.get_secret_value().splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))
