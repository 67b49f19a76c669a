"""Bearer JWTs from an identity provider, verified with PyJWT against its JWKS or one configured public key."""

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from shared import ErrorCode, ServiceUnavailable, Unauthorized

logger = logging.getLogger(__name__)

# A hung identity provider holds the refetch lock, and so every verification waiting for keys, this long at most.
JWKS_TIMEOUT_SECONDS = 5.0

# Longer tokens are refused before they are parsed or decoded, which costs time in proportion to the length (a
# 50 MB one held the event loop for seconds). Identity providers' access tokens stay well under it, claims of
# many groups included.
MAX_TOKEN_LENGTH = 8192

_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

# Most specific first: InvalidSignatureError is a DecodeError, and every one of them a PyJWTError.
# Fixed texts only: PyJWT's own messages may quote parts of the token.
_REFUSALS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not yet valid"),
    (jwt.InvalidIssuerError, "wrong issuer"),
    (jwt.InvalidAudienceError, "wrong audience"),
    (jwt.InvalidAlgorithmError, "algorithm not allowed"),
    # The token's alg picked an algorithm the key is not for, e.g. HS256 with a PEM public key as its secret.
    (jwt.InvalidKeyError, "algorithm not allowed"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.DecodeError, "malformed"),
)


def _refusal(exc: jwt.PyJWTError) -> Unauthorized:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return _invalid(f"missing claim {exc.claim!r}")
    reason = next((text for kind, text in _REFUSALS if isinstance(exc, kind)), "rejected")
    return _invalid(reason)


def _invalid(reason: str) -> Unauthorized:
    return Unauthorized(f"invalid token: {reason}", code=ErrorCode.INVALID_TOKEN)


class TokenVerifier:
    """Verifies JWT bearer tokens with PyJWT against a JWKS URL or one configured public key."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: Sequence[str],
        jwks_url: str | None = None,
        public_key: str | None = None,
        user_claim: str = "sub",
        http: httpx.AsyncClient | None = None,
        leeway_seconds: float = 0,
        jwks_refresh_seconds: float = 300,
        jwks_min_refresh_seconds: float = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (jwks_url is None) == (public_key is None):
            raise ValueError("exactly one of jwks_url and public_key must be given")
        if not algorithms or any(alg.lower() == "none" for alg in algorithms):
            raise ValueError("algorithms must list at least one signing algorithm, and never 'none'")
        if public_key is not None:
            load_pem_public_key(public_key.encode())  # a broken key fails at startup, not as 401s on every request
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.user_claim = user_claim
        self.leeway_seconds = leeway_seconds
        self.jwks_url = jwks_url
        self.jwks_refresh_seconds = jwks_refresh_seconds
        self.jwks_min_refresh_seconds = jwks_min_refresh_seconds
        self._public_key = public_key
        self._http = http
        self._clock = clock  # what the key set's age is measured by (a test's, to age it without waiting)
        self._require = ["exp", "iss", "aud", *(["sub"] if user_claim == "sub" else [])]
        self._keys: jwt.PyJWKSet | None = None
        self._fetched_at = -float("inf")
        self._attempted_at = -float("inf")
        self._attempts = 0  # finished fetches: a caller that waited for the lock sees someone else just tried
        self._lock = asyncio.Lock()

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        """Three base64url segments separated by dots (the last may be empty): not an API key."""
        return _JWT_SHAPE.fullmatch(token) is not None

    async def user_id(self, token: str) -> str:
        """The verified user id, the token's ``user_claim``; Unauthorized (code "invalid_token") otherwise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise _invalid(f"longer than {MAX_TOKEN_LENGTH} characters")
        if not self.looks_like_jwt(token):
            raise _invalid("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _refusal(exc) from None
        key = self._public_key if self._public_key is not None else await self._signing_key(header.get("kid"))
        try:
            # The allow-list, never the header's alg, decides what may verify; a PyJWK is also bound to its own alg.
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": self._require},
            )
        except jwt.PyJWTError as exc:
            raise _refusal(exc) from None
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or not user:
            raise _invalid(f"missing claim {self.user_claim!r}")
        return user

    async def _signing_key(self, kid: str | None) -> jwt.PyJWK:
        keys = self._keys
        now = self._clock()
        if keys is None or now - self._fetched_at >= self.jwks_refresh_seconds:
            keys = await self._refresh(self._attempts, stale_due=keys is not None)
        key = _find(keys, kid)
        # An unknown kid most likely means the keys were rotated; a garbage one must not make us hammer the IdP.
        if key is None and kid is not None and now - self._attempted_at >= self.jwks_min_refresh_seconds:
            keys = await self._refresh(self._attempts, stale_due=False)
            key = _find(keys, kid)
        if key is None:
            raise _invalid("unknown signing key" if kid is not None else "no kid, and the key set has several keys")
        return key

    async def _refresh(self, seen: int, *, stale_due: bool) -> jwt.PyJWKSet:
        """The key set, fetched again unless another caller fetched (or failed to) while this one waited."""
        async with self._lock:
            # A scheduled refetch that keeps failing is retried at most once per min interval, not per request.
            throttled = stale_due and self._clock() - self._attempted_at < self.jwks_min_refresh_seconds
            if self._attempts == seen and not throttled:
                self._attempted_at = self._clock()
                try:
                    self._keys = await self._fetch()
                    self._fetched_at = self._clock()
                except (httpx.HTTPError, ValueError, TypeError, KeyError, jwt.PyJWTError) as exc:  # a broken JWKS too
                    logger.warning("JWKS fetch from %s failed: %r", self.jwks_url, exc)
                self._attempts += 1  # not when cancelled: then a waiter fetches instead
            if self._keys is None:
                raise ServiceUnavailable(
                    "the identity provider's keys could not be fetched: retry shortly", code=ErrorCode.JWKS_UNAVAILABLE
                )
            return self._keys

    async def _fetch(self) -> jwt.PyJWKSet:
        assert self.jwks_url is not None
        if self._http is not None:
            response = await self._http.get(self.jwks_url, timeout=JWKS_TIMEOUT_SECONDS)
        else:
            # A fetch every few minutes: a client of its own per fetch costs little and needs no closing.
            async with httpx.AsyncClient(timeout=JWKS_TIMEOUT_SECONDS) as client:
                response = await client.get(self.jwks_url)
        response.raise_for_status()
        body = response.json()
        if not isinstance(body, dict):
            raise ValueError("the JWKS is not a JSON object")
        return jwt.PyJWKSet.from_dict(body)


def _find(keys: jwt.PyJWKSet, kid: str | None) -> jwt.PyJWK | None:
    """The key named ``kid``; without a kid, the set's only signing key, if it has just one."""
    signing = [key for key in keys.keys if key.public_key_use in (None, "sig")]
    if kid is None:
        return signing[0] if len(signing) == 1 else None
    return next((key for key in signing if key.key_id == kid), None)
