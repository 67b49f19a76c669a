"""The upstreams file (UPSTREAMS_FILE, TOML): which upstreams the gateway calls, the models each serves, their
aliases and fallbacks. A mistake stops start-up with the file's name and the line of the entry at fault.

```toml
[[upstreams]]
name = "local"
base_url = "http://127.0.0.1:8080/v1"
api_key_file = "/run/secrets/local_key"   # or api_key = "..."; none: a server that needs none
models = ["llama-3.1-8b"]                  # or "discover" (its /v1/models), or "any" (whatever is asked)
continuation = "auto"                      # exact | vllm | prefix | restart | auto (asked at start-up)
timeout_seconds = 60
max_concurrency = 8                        # streams at once; more wait up to queue_seconds, in a queue of
max_queue = 16                             # max_queue, and are refused past it (429 with Retry-After)

[aliases]
fast = "llama-3.1-8b"

[fallbacks]
"gpt-4o" = ["llama-3.1-8b"]                # after every upstream serving gpt-4o, in the file's order
```
"""

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from chat_gateway.config import ContinuationMethod

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
DEFAULT = "default"  # the upstream of the single-upstream settings (OPENAI_*)


class ConfigError(Exception):
    """The upstreams file cannot be used: the message says where and why."""


class UpstreamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME)
    base_url: str | None = None  # None: OpenAI's API
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    models: list[str] | Literal["discover", "any"] = "discover"
    continuation: ContinuationMethod | Literal["auto"] = "auto"
    timeout_seconds: float = Field(default=60.0, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    max_queue: int = Field(default=0, ge=0)
    queue_seconds: float = Field(default=10.0, ge=0)
    # The circuit breaker (breaker.py): this many failures in a row skip the upstream for the cool-down.
    failure_threshold: int | None = Field(default=5, ge=1)  # None: never skipped
    cooldown_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _one_key(self) -> "UpstreamConfig":
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("set api_key or api_key_file, not both")
        if isinstance(self.models, list) and not self.models:
            raise ValueError('models is empty: list them, or say "discover" or "any"')
        return self

    def key(self) -> str:
        """Its API key (read from its file), or a placeholder for a server that needs none."""
        if self.api_key_file is not None:
            try:
                return self.api_key_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"upstream {self.name!r}: api_key_file {self.api_key_file}: {exc.strerror}") from exc
        return self.api_key.get_secret_value() if self.api_key is not None else "none"


class UpstreamsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    upstreams: list[UpstreamConfig] = Field(min_length=1)
    aliases: dict[str, str] = Field(default_factory=dict)
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "UpstreamsConfig":
        names = [upstream.name for upstream in self.upstreams]
        if twice := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"upstream names must be unique: {', '.join(twice)} more than once")
        if looped := sorted(set(self.aliases) & set(self.aliases.values())):
            raise ValueError(f"an alias names a model, not another alias: {', '.join(looped)}")
        return self

    def listed_models(self) -> set[str] | None:
        """Every model the upstreams serve, when each lists its own; None when one discovers them or takes any."""
        served: set[str] = set()
        for upstream in self.upstreams:
            if not isinstance(upstream.models, list):
                return None
            served.update(upstream.models)
        return served


def unserved(
    aliases: Mapping[str, str], fallbacks: Mapping[str, list[str]], served: set[str]
) -> list[tuple[tuple[str, str], str]]:
    """Each alias and fallback naming a model none of ``served`` is: where it is (its table and key), and what
    it names. A route to such a model never reaches anything: a mistake in the file, not something to wait for."""
    found = [(("aliases", alias), model) for alias, model in aliases.items() if model not in served]
    for model, chain in fallbacks.items():
        found += [(("fallbacks", model), named) for named in (model, *chain) if named not in served]
    return found


def load(path: Path) -> UpstreamsConfig:
    """The file at ``path``, parsed and checked; ``ConfigError`` names the line at fault."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from exc  # tomllib says "(at line N, column M)"
    try:
        config = UpstreamsConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        line = line_of(text, error["loc"])
        where = ".".join(str(part) for part in error["loc"]) or "the file"
        raise ConfigError(f"{path}, line {line}: {where}: {error['msg']}") from exc
    if (served := config.listed_models()) is not None and (
        missing := unserved(config.aliases, config.fallbacks, served)
    ):
        (loc, model), *_ = missing
        where = ".".join(loc)
        raise ConfigError(f"{path}, line {line_of(text, loc)}: {where}: no upstream serves {model!r}")
    return config


def check(path: Path) -> None:
    """Raise ``ConfigError`` unless the file at ``path`` can be used: parsed, checked, its key files readable."""
    for upstream in load(path).upstreams:
        upstream.key()


def line_of(text: str, loc: tuple[int | str, ...]) -> int:
    """The line (from 1) of the entry ``loc`` points to: each key of it found after the one before (an index
    counts ``[[array]]`` headers), as far as the file writes it that way; else the nearest found."""
    lines = text.splitlines()
    at, table = 0, ""
    for part in loc:
        if isinstance(part, int):
            header = re.compile(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]")
            found = [n for n, line in enumerate(lines) if header.match(line)]
            at = found[part] if part < len(found) else at
            continue
        key = re.compile(rf'^\s*(?:"{re.escape(part)}"|{re.escape(part)})\s*=|^\s*\[+\s*{re.escape(part)}\s*\]')
        at = next((n for n in range(at, len(lines)) if key.match(lines[n])), at)
        table = part
    return at + 1
