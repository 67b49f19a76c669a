"""Who calls the gateway, known from the credential alone, and what they may reach and spend.

Three kinds of caller (README, "Identity"):

- a **user**, with a user key (created by an admin, stored hashed by persistence) or a JWT from the
  deployment's identity provider: sees and changes only their own chats, within their limits;
- an **admin**, with one of CHAT_ADMIN_KEYS: may act for any user (by naming ``user_id``) and manage keys;
- in **open mode** (no admin keys, no identity provider: local use), anyone: as an admin, counted per address.
"""

import enum
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache
from limits import RateLimitItem, RateLimitItemPerMinute, parse

from chat_gateway.auth.jwt import MAX_TOKEN_LENGTH, TokenVerifier
from chat_gateway.clients.persistence import PersistenceClient
from chat_gateway.config import Settings
from shared import ErrorCode, Forbidden, TooManyRequests, Unauthorized, key_matches
from shared.identity import (
    CHARS_PER_TOKEN,
    DEFAULT_USER,
    MAX_TOKENS,
    MAX_USER_ID,
    RESERVED_USERS,
    USER_KEY_PREFIX,
    KeyIdentity,
    Limits,
    TurnAccount,
    usable_user_id,
)
from shared.ratelimit import RateLimiter, Verdict

logger = logging.getLogger(__name__)

MISSING = "missing or invalid key: send it in x-api-key, or as Authorization: Bearer <key>"
MAX_KEY_LENGTH = 512  # what persistence takes: a longer one is no key of ours
# The longest credential of any kind looked at: a JWT's bound (tokens.MAX_TOKEN_LENGTH); keys are shorter.
MAX_CREDENTIAL_LENGTH = MAX_TOKEN_LENGTH
# Bounds each cache of lookups: made-up keys and addresses must not grow the gateway's memory.
CACHED_LOOKUPS = 10_000


class Role(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"
    OPEN = "open"


@dataclass(frozen=True, slots=True)
class Caller:
    role: Role
    user_id: str | None  # a user's own id; None for admins and open callers, who name the user they act for
    limits: Limits  # in force: their own, else the defaults
    rate: RateLimitItem | None  # requests allowed (None: no limit)
    rate_identity: str  # what the rate limit counts: never a secret

    @property
    def is_user(self) -> bool:
        return self.role == Role.USER

    def acting_for(self, requested: str | None) -> str | None:
        """The user a request is for: a user's own (naming another is a 403); whoever an admin names (None:
        nobody in particular, so everyone's data)."""
        if self.user_id is None:
            return requested
        if requested is not None and requested != self.user_id:
            raise Forbidden(f"this credential is {self.user_id!r}'s: it cannot act for {requested!r}")
        return self.user_id

    def owner(self, requested: str | None) -> str:
        """Whose a new chat is."""
        return self.acting_for(requested) or DEFAULT_USER

    def owns_exclusively(self, requested: str | None) -> bool:
        """Whether a session this caller names must be its user's (else it is as if it did not exist): for a
        user, and for an admin acting for a named user. Open mode shares everything, as it always has."""
        return self.is_user or (self.role == Role.ADMIN and requested is not None)

    def scope(self, requested: str | None = None) -> str | None:
        """Whose chats a request reaches (None: everyone's), what persistence is asked on behalf of: a user's own; an
        admin acting for a named user, that user's (it never writes into another's session for them); an admin
        acting for nobody, or open mode, any. ``requested``: the user a request names (None: none)."""
        if self.is_user or (self.role == Role.ADMIN and requested is not None):
            return self.owner(requested)
        return None

    def writes_into(self, requested: str | None) -> str | None:
        """Whose sessions a request that names one may write into: a user's own; an admin's, those of the user it
        acts for, or without one the default user's (never a session someone else owns); in open mode, any."""
        if self.role == Role.OPEN:
            return None
        return self.owner(requested)

    def require_admin(self) -> None:
        if self.is_user:
            raise Forbidden("only an admin key may do this")

    def account(
        self, user_id: str, *, max_tokens: int | None, prompt_chars: int, reserve: int, history_chars: int = 0
    ) -> TurnAccount:
        """A new run's account: whose usage it is, and (for users) the budgets it must fit in.

        Until its usage is known the run counts for its prompt (estimated from its length: what it is sent, and
        up to ``history_chars`` of its session's stored history, which persistence counts) and its
        ``max_tokens`` (``reserve`` without one): a budget is passed by at most that much.
        """
        if not self.is_user:
            return TurnAccount(user_id=user_id)
        prompt = min(math.ceil(prompt_chars / CHARS_PER_TOKEN), MAX_TOKENS)
        expected = prompt + (max_tokens if max_tokens is not None else reserve)
        return TurnAccount(
            user_id=user_id,
            reserve_tokens=min(expected, MAX_TOKENS),
            prompt_tokens=prompt,
            history_chars=history_chars,
            tokens_per_day=self.limits.tokens_per_day,
            tokens_per_month=self.limits.tokens_per_month,
        )


# Whoever calls a service function directly (tests, tools): acts for anyone, counted nowhere.
ANYONE = Caller(Role.OPEN, None, Limits(), None, "local")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


class Authenticator:
    """Turns a request's credential into a ``Caller`` and counts the request against that caller's limit."""

    def __init__(
        self,
        settings: Settings,
        persistence: PersistenceClient,
        limiter: RateLimiter,
        tokens: TokenVerifier | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.persistence = persistence
        self.limiter = limiter
        self.tokens = tokens
        self.defaults = Limits(
            requests_per_minute=_per_minute(settings.rate_limit),
            tokens_per_day=settings.tokens_per_day,
            tokens_per_month=settings.tokens_per_month,
        )
        self._default_rate = parse(settings.rate_limit) if settings.rate_limit else None
        ttl = settings.key_cache_seconds
        # Key digest -> identity; user id -> limits. Expiring: a revoked or expired key, or a changed limit, takes
        # effect within KEY_CACHE_SECONDS (on ``clock``: a test's, to age the entries without waiting).
        self._keys: TTLCache[str, KeyIdentity] | None = TTLCache(CACHED_LOOKUPS, ttl, clock) if ttl else None
        # Digests of keys persistence refused: the same made-up key sent again costs no lookup. Apart from the
        # identities, so a flood of made-up keys never evicts the valid ones.
        self._refused: TTLCache[str, bool] | None = TTLCache(CACHED_LOOKUPS, ttl, clock) if ttl else None
        self._limits: TTLCache[str, Limits] | None = TTLCache(CACHED_LOOKUPS, ttl, clock) if ttl else None
        self._failure_rate = parse(settings.auth_failure_limit) if settings.auth_failure_limit else None
        # Address -> when its failure window ends (epoch seconds): refused before any work until then. Kept
        # here, so the check costs no round trip to the limiter's store on every request.
        self._blocked: TTLCache[str, float] | None = None
        if self._failure_rate is not None:
            self._blocked = TTLCache(CACHED_LOOKUPS, self._failure_rate.get_expiry())

    @classmethod
    def build(
        cls, settings: Settings, persistence: PersistenceClient, limiter: RateLimiter, http: Any
    ) -> "Authenticator":
        tokens = None
        if settings.jwt_enabled:
            assert settings.jwt_issuer is not None
            assert settings.jwt_audience is not None
            tokens = TokenVerifier(
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                algorithms=[name.strip() for name in settings.jwt_algorithms.split(",") if name.strip()],
                jwks_url=settings.jwt_jwks_url,
                public_key=settings.jwt_public_key.get_secret_value() if settings.jwt_public_key else None,
                user_claim=settings.jwt_user_claim,
                jwks_min_refresh_seconds=settings.jwt_jwks_min_refresh_seconds,
                http=http,
            )
        return cls(settings, persistence, limiter, tokens)

    async def identify(self, credential: str | None, address: str) -> Caller:
        if self.settings.open_mode:
            # Whatever header is sent: counted per address, so made-up keys are not fresh budgets.
            return Caller(Role.OPEN, None, self.defaults, self._default_rate, f"addr:{address}")
        self._refuse_if_blocked(address)
        try:
            return await self._identify(credential)
        except Unauthorized:
            await self._count_failure(address)
            raise

    def _refuse_if_blocked(self, address: str) -> None:
        """429 for an address past AUTH_FAILURE_LIMIT, before its credential is even compared or looked up."""
        if self._blocked is None or (until := self._blocked.get(address)) is None:
            return
        if (wait := math.ceil(until - time.time())) > 0:
            raise TooManyRequests(
                f"too many refused credentials from this address; retry in {wait} s", headers={"Retry-After": str(wait)}
            )

    async def _count_failure(self, address: str) -> None:
        """Count a refused credential against its address; past AUTH_FAILURE_LIMIT, a 429 instead of the 401."""
        if self._failure_rate is None or self._blocked is None:
            return
        verdict = await self.limiter.hit(self._failure_rate, f"auth-failures:{address}")
        if not verdict.allowed:
            self._blocked[address] = verdict.reset_at
            self._refuse_if_blocked(address)

    async def _identify(self, credential: str | None) -> Caller:
        if not credential:
            raise Unauthorized(MISSING)
        if len(credential) > MAX_CREDENTIAL_LENGTH:
            # Refused unread, before any comparison, pattern or decoding: their cost grows with the length.
            raise Unauthorized(f"the credential is longer than {MAX_CREDENTIAL_LENGTH} characters: {MISSING}")
        if key_matches(credential, self.settings.admin_keys):
            # Limited as every key was before users had keys of their own: one key, one budget.
            return Caller(Role.ADMIN, None, Limits(), self._default_rate, f"admin:{_digest(credential)}")
        if self.tokens is not None and TokenVerifier.looks_like_jwt(credential):
            user_id = await self.tokens.user_id(credential)
            if not usable_user_id(user_id):
                raise Unauthorized(
                    f"invalid token: its user claim is not a user id (1 to {MAX_USER_ID} characters, no control "
                    "characters)",
                    code=ErrorCode.INVALID_TOKEN,
                )
            if user_id in RESERVED_USERS:
                raise Unauthorized(
                    "invalid token: its user claim names a built-in owner of shared chats, not a user",
                    code=ErrorCode.INVALID_TOKEN,
                )
            return self._user(user_id, await self._user_limits(user_id))
        # Anything but a user key is refused unread: made-up credentials cost no lookup.
        if not credential.startswith(USER_KEY_PREFIX) or len(credential) > MAX_KEY_LENGTH:
            raise Unauthorized(MISSING)
        identity = await self._key(credential)
        if not usable_user_id(identity.user_id):  # issued before the rule: it would fail on every route
            raise Unauthorized(
                f"this key's user id is not a user id (1 to {MAX_USER_ID} characters, no control characters): ask for "
                "a key of your own",
                code=ErrorCode.INVALID_USER_KEY,
            )
        if identity.user_id in RESERVED_USERS:
            # Created before such ids were refused: it would read every chat filed under that owner.
            raise Unauthorized(
                "this key's user is a built-in owner of shared chats, not a user: ask for a key of your own",
                code=ErrorCode.INVALID_USER_KEY,
            )
        return self._user(identity.user_id, identity.limits)

    def _user(self, user_id: str, own: Limits) -> Caller:
        rate = self._default_rate
        if own.requests_per_minute is not None:
            rate = RateLimitItemPerMinute(own.requests_per_minute)
        return Caller(Role.USER, user_id, own.over(self.defaults), rate, f"user:{user_id}")

    async def _key(self, key: str) -> KeyIdentity:
        digest = _digest(key)
        if self._keys is not None and (cached := self._keys.get(digest)) is not None:
            return cached
        if self._refused is not None and self._refused.get(digest):
            raise Unauthorized(MISSING)
        identity = await self.persistence.keys.identify(key)
        if identity is None:
            if self._refused is not None:
                self._refused[digest] = True
            raise Unauthorized(MISSING)
        if self._keys is not None:
            self._keys[digest] = identity
        return identity

    async def _user_limits(self, user_id: str) -> Limits:
        if self._limits is not None and (cached := self._limits.get(user_id)) is not None:
            return cached
        limits = await self.persistence.users.limits(user_id)
        if self._limits is not None:
            self._limits[user_id] = limits
        return limits

    async def count(self, caller: Caller) -> Verdict | None:
        """Count one request of ``caller``; past their rate, a 429 (None: no limit applies)."""
        if caller.rate is None:
            return None
        verdict = await self.limiter.hit(caller.rate, caller.rate_identity)
        if not verdict.allowed:
            headers = verdict.headers() | {"Retry-After": str(verdict.retry_after)}
            raise TooManyRequests(verdict.detail, headers=headers)
        return verdict


def _per_minute(limit: str | None) -> int | None:
    """RATE_LIMIT ("60/minute", "1000/hour"...) as requests per minute, for a report of the limits in force."""
    if not limit:
        return None
    item = parse(limit)
    return max(1, round(item.amount * 60 / item.get_expiry()))
