import hashlib
import ipaddress
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from shared import ServiceSettings, split_keys
from shared.settings import rate_limit_or_none

OPENAI_HOST = "api.openai.com"
UVICORN_DEFAULT_HOST = "127.0.0.1"  # what uvicorn binds without --host

# How an upstream continues an interrupted answer: the table in prompt.Continuation.
ContinuationMethod = Literal["exact", "vllm", "prefix", "restart"]


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach an address: a name is taken at its word only if it is localhost."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def uvicorn_host(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The address uvicorn's command line binds, when this process is uvicorn's CLI (`uvicorn ...` or
    `python -m uvicorn ...`); None otherwise, or when it serves a socket it did not bind (--uds, --fd).

    The gateway has to be told where it listens: uvicorn starts the application (the factory, then its
    lifespan) before it binds, and hands it nothing about the address. Its command line is what decided it.
    """
    program = Path(argv[0]) if argv else Path()
    if not (program.name == "uvicorn" or (program.name == "__main__.py" and program.parent.name == "uvicorn")):
        return None
    # click's rules: --host X or --host=X, the last one winning; without one, UVICORN_HOST, then the default.
    host = environ.get("UVICORN_HOST") or UVICORN_DEFAULT_HOST
    for index, arg in enumerate(argv[1:], start=1):
        if arg == "--":
            break
        if arg in ("--uds", "--fd") or arg.startswith(("--uds=", "--fd=")):
            return None
        if arg == "--host" and index + 1 < len(argv):
            host = argv[index + 1]
        elif arg.startswith("--host="):
            host = arg.removeprefix("--host=")
    return host


def _instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Settings(ServiceSettings):
    service_name: ClassVar[str] = "chat_gateway"

    # The persistence service and its key (the same secret the persistence service reads).
    api_base_url: str = "http://localhost:8000"
    api_key: SecretStr
    # The key of the ids that session names map to (an OpenAI client's X-Session-Id that is not a UUID): secret,
    # so that nobody computes the id of another's name and takes it first. Default: derived from API_KEY's first
    # key; set it (SESSION_NAME_SECRET_FILE...) to keep names through a rotation of that key.
    session_name_secret: SecretStr | None = None

    # The upstream: OpenAI or any OpenAI-compatible server. Without a key chat calls answer 503.
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    upstream_timeout_seconds: float = Field(default=60.0, gt=0)
    # How the upstream continues an interrupted answer (prompt.Continuation): `auto` asks the upstream what it is,
    # once, at start-up (chat_gateway/clients/upstream_probe.py), and takes `restart`, which every upstream can do, when
    # it cannot tell. UPSTREAM_PROBE_SECONDS bounds how long start-up waits for that answer.
    upstream_continuation: ContinuationMethod | Literal["auto"] = "auto"
    upstream_probe_seconds: float = Field(default=2.0, gt=0, le=30)
    # Many upstreams, and the models each serves (chat_gateway/upstreams/config.py): a TOML file, which a Docker
    # secret may hold. Set, it replaces the OPENAI_* upstream above; OPENAI_MODEL stays the default model.
    upstreams_file: Path | None = None

    # Who may call (README, "Identity"): admin keys, one per line; users' keys (created by admins, stored
    # hashed in persistence); JWTs from an identity provider (JWT_*). With none of them: open mode.
    chat_admin_keys: SecretStr | None = None
    chat_api_keys: SecretStr | None = None  # the former name of CHAT_ADMIN_KEYS, still read
    # How long a user key's lookup is trusted, a refusal as well as an identity: a revoked or expired key
    # stops working within this.
    key_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    # Refused credentials (401s) per client address: past it, that address gets 429s, without any lookup or
    # token verification, until the window ends. "none" turns it off.
    auth_failure_limit: str | None = "30/minute"
    models_cache_seconds: float = Field(default=60.0, ge=0, le=86400)  # GET /v1/models: the upstream's list
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks_url: str | None = None
    jwt_public_key: SecretStr | None = None  # a PEM, instead of a JWKS URL (JWT_PUBLIC_KEY_FILE reads a file)
    jwt_algorithms: str = "RS256"  # comma-separated allow-list
    jwt_user_claim: str = Field(default="sub", min_length=1)
    # A token signed by a key the cached JWKS lacks (rotated) makes the gateway fetch it again, at most this often.
    jwt_jwks_min_refresh_seconds: float = Field(default=10.0, ge=0)
    # Where the gateway listens, for a launcher whose command line does not say (uvicorn's does, and wins: see
    # uvicorn_host). Open mode is refused on any address but loopback unless ALLOW_OPEN says that only trusted
    # callers reach it.
    host: str | None = None
    allow_open: bool = False

    instance_id: str = Field(default_factory=_instance_id, min_length=1, max_length=200)
    lease_seconds: float = Field(default=15.0, gt=0, le=3600)
    # How much text a crash may lose (resume regenerates it) against how many writes an answer costs.
    flush_interval_seconds: float = Field(default=1.0, gt=0)
    flush_bytes: int = Field(default=4096, ge=1)
    history_budget_chars: int = Field(default=24_000, ge=0)
    # Where an answer's text is made durable before a client is shown it (chat_gateway/answers/log.py): a Redis URL
    # (redis://, rediss:// or unix://; a secret, since it may hold a password). Unset: persistence itself, one
    # write per chunk at a steady rate instead of one per FLUSH_INTERVAL_SECONDS.
    answer_log_url: SecretStr | None = None
    # How long an append to the log may take before the generation gives up on the log and uses persistence.
    answer_log_timeout_seconds: float = Field(default=1.0, gt=0, le=60)

    # One retry policy for the upstream: starting a stream and continuing an interrupted one.
    retry_attempts: int = Field(default=4, ge=1, le=20)
    retry_max_seconds: float = Field(default=60.0, gt=0)
    retry_initial_wait: float = Field(default=0.5, ge=0)
    retry_max_wait: float = Field(default=20.0, ge=0)
    persistence_retry_attempts: int = Field(default=5, ge=1, le=20)
    # How long a chat whose turn may or may not have been stored waits for persistence to say (longer than a
    # persistence restart) before its client is told it failed; it is then never generated.
    turn_settle_seconds: float = Field(default=30.0, gt=0, le=600)
    # An OpenAI client's request sent again without an Idempotency-Key (its own retries) attaches to the first
    # one's answer while that is generated, once it failed, or for this long after it completed (README).
    retry_window_seconds: float = Field(default=60.0, ge=0, le=30 * 86400)

    recovery_interval_seconds: float = Field(default=10.0, gt=0)
    recovery_mode: Literal["resume", "fail"] = "resume"
    # On SIGTERM, running answers get this long to finish before they are saved and released.
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    reattach_poll_seconds: float = Field(default=0.25, gt=0)
    # Every user's limits unless persistence holds their own (a key's, or the user's): each chat may cost money.
    rate_limit: str | None = "60/minute"
    tokens_per_day: int | None = Field(default=None, ge=1)
    tokens_per_month: int | None = Field(default=None, ge=1)
    # What an answer without max_tokens counts for against a token budget until its usage is known.
    budget_reserve_tokens: int = Field(default=1024, ge=0)

    @field_validator("answer_log_url")
    @classmethod
    def _check_answer_log_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("auth_failure_limit")
    @classmethod
    def _parse_auth_failure_limit(cls, value: str | None) -> str | None:
        return rate_limit_or_none(value)

    @model_validator(mode="after")
    def _jwt_complete(self) -> "Settings":
        if (self.jwt_jwks_url is None) == (self.jwt_public_key is None):
            if self.jwt_jwks_url is not None:
                raise ValueError("set JWT_JWKS_URL or JWT_PUBLIC_KEY, not both")
            if self.jwt_issuer or self.jwt_audience:
                raise ValueError("JWT_ISSUER and JWT_AUDIENCE need JWT_JWKS_URL or JWT_PUBLIC_KEY")
            return self
        if not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("JWT bearer tokens need JWT_ISSUER and JWT_AUDIENCE: both are checked in every token")
        return self

    def open_exposure(self, launched_on: str | None) -> str | None:
        """Why this gateway must not start (None: it may): open mode on an address others can reach.

        ``launched_on`` is uvicorn's --host (uvicorn_host), the address actually bound when known; else HOST.
        """
        if not self.open_mode or self.allow_open:
            return None
        address, said_by = (launched_on, "uvicorn's --host") if launched_on is not None else (self.host, "HOST")
        if address is None or is_loopback(address):
            return None
        return (
            f"open mode on {address} ({said_by}), not a loopback address: anyone who reaches it could read and "
            "change every chat and spend the upstream key. Give the gateway admin keys (CHAT_ADMIN_KEYS, or "
            'CHAT_ADMIN_KEYS_FILE naming a file of them; README, "Identity") or an identity provider (JWT_*), '
            "or bind it to 127.0.0.1, or set ALLOW_OPEN=true if only trusted callers can reach that address"
        )

    @property
    def session_names_key(self) -> bytes:
        if self.session_name_secret is not None:
            return self.session_name_secret.get_secret_value().encode()
        first = split_keys(self.api_key)[:1] or ("",)
        return hashlib.sha256(b"session names\x00" + first[0].encode()).digest()

    @property
    def admin_keys(self) -> tuple[str, ...]:
        return split_keys(self.chat_admin_keys) + split_keys(self.chat_api_keys)

    @property
    def jwt_enabled(self) -> bool:
        return self.jwt_jwks_url is not None or self.jwt_public_key is not None

    @property
    def open_mode(self) -> bool:
        """No admin keys and no identity provider: anyone who reaches the gateway may do anything (local use)."""
        return not self.admin_keys and not self.jwt_enabled
