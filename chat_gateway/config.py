import os
import socket
import uuid
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr

from shared import ServiceSettings, split_keys

OPENAI_HOST = "api.openai.com"


def _instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Settings(ServiceSettings):
    service_name: ClassVar[str] = "chat_gateway"

    # The persistence service and its key (the same secret the persistence service reads).
    api_base_url: str = "http://localhost:8000"
    api_key: SecretStr

    # The upstream: OpenAI or any OpenAI-compatible server. Without a key chat calls answer 503.
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    upstream_timeout_seconds: float = Field(default=60.0, gt=0)
    # How the upstream continues an interrupted answer sent as the last, assistant, message (prompt.Continuation):
    # `exact` continues that text (llama.cpp, Ollama); `restart` answers with a new message, which may repeat
    # it (OpenAI). `auto`: `restart` for OpenAI's own API, `exact` for any other server.
    upstream_continuation: Literal["auto", "exact", "restart"] = "auto"

    # Optional keys clients of the gateway must send in x-api-key (one per line).
    chat_api_keys: SecretStr | None = None

    instance_id: str = Field(default_factory=_instance_id, min_length=1, max_length=200)
    lease_seconds: float = Field(default=15.0, gt=0, le=3600)
    # How much text a crash may lose (resume regenerates it) against how many writes an answer costs.
    flush_interval_seconds: float = Field(default=1.0, gt=0)
    flush_bytes: int = Field(default=4096, ge=1)
    history_budget_chars: int = Field(default=24_000, ge=0)

    # One retry policy for the upstream: starting a stream and continuing an interrupted one.
    retry_attempts: int = Field(default=4, ge=1, le=20)
    retry_max_seconds: float = Field(default=60.0, gt=0)
    retry_initial_wait: float = Field(default=0.5, ge=0)
    retry_max_wait: float = Field(default=20.0, ge=0)
    persistence_retry_attempts: int = Field(default=5, ge=1, le=20)
    # How long a chat whose turn may or may not have been stored waits for persistence to say (longer than a
    # persistence restart) before its client is told it failed; it is then never generated.
    turn_settle_seconds: float = Field(default=30.0, gt=0, le=600)

    recovery_interval_seconds: float = Field(default=10.0, gt=0)
    recovery_mode: Literal["resume", "fail"] = "resume"
    # On SIGTERM, running answers get this long to finish before they are saved and released.
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    reattach_poll_seconds: float = Field(default=0.25, gt=0)
    rate_limit: str | None = "60/minute"  # per client key: each chat may cost real money

    @property
    def continues_exactly(self) -> bool:
        if self.upstream_continuation != "auto":
            return self.upstream_continuation == "exact"
        return self.openai_base_url is not None and urlsplit(self.openai_base_url).hostname != OPENAI_HOST

    @property
    def client_keys(self) -> tuple[str, ...]:
        return split_keys(self.chat_api_keys)
