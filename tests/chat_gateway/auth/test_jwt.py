import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI, Response
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from chat_gateway.auth.jwt import MAX_TOKEN_LENGTH, TokenVerifier
from shared import ServiceUnavailable, Unauthorized
from testing.ports import free_port
from tests.conftest import serve

pytestmark = pytest.mark.anyio

ISSUER = "https://idp.example.test/"
AUDIENCE = "durable-chat"


@dataclass
class Key:
    kid: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    alg: str

    @property
    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **headers})


@pytest.fixture(scope="module")
def rsa_key() -> Key:
    return Key("rsa-1", rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


@pytest.fixture(scope="module")
def rotated_key() -> Key:
    return Key("rsa-2", rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


@pytest.fixture(scope="module")
def ec_key() -> Key:
    return Key("ec-1", ec.generate_private_key(ec.SECP256R1()), "ES256")


@dataclass
class JWKS:
    """What the local identity provider serves; tests change it and read how often it was asked."""

    url: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    delay: float = 0.0
    failing: bool = False


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JWKS]:
    state = JWKS()
    app = FastAPI()

    @app.get("/.well-known/jwks.json")
    async def jwks() -> Response:
        state.fetches += 1
        await asyncio.sleep(state.delay)
        if state.failing:
            return Response(status_code=500)
        return Response(json.dumps({"keys": state.keys}), media_type="application/json")

    with serve(app) as url:
        state.url = f"{url}/.well-known/jwks.json"
        yield state


@pytest.fixture
def idp(jwks_server: JWKS, rsa_key: Key) -> JWKS:
    jwks_server.keys = [rsa_key.jwk()]
    jwks_server.fetches = 0
    jwks_server.delay = 0.0
    jwks_server.failing = False
    return jwks_server


def verifier(url: str | None, **overrides: Any) -> TokenVerifier:
    options: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256"], "jwks_url": url}
    return TokenVerifier(**{**options, **overrides})


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "user-42", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, **overrides}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token PyJWT would refuse to sign: unsigned, or HMAC'd with whatever ``secret`` is."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


async def refused(check: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as caught:
        await check.user_id(token)
    assert caught.value.code == "invalid_token"
    assert caught.value.status_code == 401
    assert token not in caught.value.detail
    return caught.value.detail


async def test_a_valid_token_gives_its_subject(idp: JWKS, rsa_key: Key) -> None:
    async with httpx.AsyncClient() as http:
        check = verifier(idp.url, http=http)
        assert await check.user_id(rsa_key.sign(claims())) == "user-42"
        assert await check.user_id(rsa_key.sign(claims(sub="user-7"))) == "user-7"
    assert idp.fetches == 1  # the key set is cached


async def test_a_custom_user_claim_is_the_user_id(idp: JWKS, rsa_key: Key) -> None:
    check = verifier(idp.url, user_claim="email")
    assert await check.user_id(rsa_key.sign(claims(email="ada@example.test"))) == "ada@example.test"
    assert await refused(check, rsa_key.sign(claims())) == "invalid token: missing claim 'email'"
    assert await refused(check, rsa_key.sign(claims(email=""))) == "invalid token: missing claim 'email'"


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"exp": int(time.time()) - 60}, "invalid token: expired"),
        ({"nbf": int(time.time()) + 3600}, "invalid token: not yet valid"),
        ({"iss": "https://evil.example.test/"}, "invalid token: wrong issuer"),
        ({"aud": "someone-else"}, "invalid token: wrong audience"),
        ({"exp": None}, "invalid token: missing claim 'exp'"),
        ({"sub": None}, "invalid token: missing claim 'sub'"),
    ],
)
async def test_bad_claims_are_refused(idp: JWKS, rsa_key: Key, changes: dict[str, Any], detail: str) -> None:
    payload = {name: value for name, value in claims(**changes).items() if value is not None}
    assert await refused(verifier(idp.url), rsa_key.sign(payload)) == detail


async def test_leeway_forgives_a_little_clock_skew(idp: JWKS, rsa_key: Key) -> None:
    token = rsa_key.sign(claims(exp=int(time.time()) - 5))
    assert await verifier(idp.url, leeway_seconds=60).user_id(token) == "user-42"


async def test_an_unsigned_token_is_refused(idp: JWKS, rsa_key: Key) -> None:
    token = hand_made({"alg": "none", "typ": "JWT", "kid": rsa_key.kid}, claims(), secret=None)
    assert TokenVerifier.looks_like_jwt(token)
    assert await refused(verifier(idp.url), token) == "invalid token: algorithm not allowed"


@pytest.mark.parametrize("algorithms", [["RS256"], ["RS256", "HS256"]])
async def test_hs256_signed_with_the_public_key_is_refused(idp: JWKS, rsa_key: Key, algorithms: list[str]) -> None:
    header = {"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}
    token = hand_made(header, claims(), secret=rsa_key.public_pem.encode())
    by_jwks = verifier(idp.url, algorithms=algorithms)
    by_pem = verifier(None, public_key=rsa_key.public_pem, algorithms=algorithms)
    assert await refused(by_jwks, token) == "invalid token: algorithm not allowed"
    assert await refused(by_pem, token) == "invalid token: algorithm not allowed"


async def test_an_algorithm_off_the_allow_list_is_refused(idp: JWKS, rsa_key: Key, ec_key: Key) -> None:
    idp.keys = [rsa_key.jwk(), ec_key.jwk()]
    token = ec_key.sign(claims())
    assert await refused(verifier(idp.url), token) == "invalid token: algorithm not allowed"
    assert await verifier(idp.url, algorithms=["RS256", "ES256"]).user_id(token) == "user-42"


async def test_an_unknown_kid_is_refused(idp: JWKS, rotated_key: Key) -> None:
    assert await refused(verifier(idp.url), rotated_key.sign(claims())) == "invalid token: unknown signing key"


async def test_a_forged_signature_is_refused(idp: JWKS, rsa_key: Key, rotated_key: Key) -> None:
    forged = jwt.encode(claims(), rotated_key.private, algorithm="RS256", headers={"kid": rsa_key.kid})
    assert await refused(verifier(idp.url), forged) == "invalid token: bad signature"


@pytest.mark.parametrize("token", ["a.b.c", "bm90IGpzb24.e30.c2ln", "not a jwt", ""])
async def test_malformed_tokens_are_refused(idp: JWKS, token: str) -> None:
    with pytest.raises(Unauthorized, match=r"^invalid token: malformed$"):
        await verifier(idp.url).user_id(token)


async def test_without_a_kid_only_a_lone_signing_key_verifies(idp: JWKS, rsa_key: Key, rotated_key: Key) -> None:
    token = jwt.encode(claims(), rsa_key.private, algorithm="RS256")
    assert "kid" not in jwt.get_unverified_header(token)
    assert await verifier(idp.url).user_id(token) == "user-42"
    idp.keys = [rsa_key.jwk(), rotated_key.jwk()]
    assert await refused(verifier(idp.url), token) == "invalid token: no kid, and the key set has several keys"


async def test_rotated_keys_are_picked_up_without_a_new_verifier(idp: JWKS, rsa_key: Key, rotated_key: Key) -> None:
    check = verifier(idp.url, jwks_min_refresh_seconds=0)
    assert await check.user_id(rsa_key.sign(claims())) == "user-42"
    idp.keys = [rsa_key.jwk(), rotated_key.jwk()]
    assert await check.user_id(rotated_key.sign(claims(sub="user-9"))) == "user-9"
    assert idp.fetches == 2


@dataclass
class Clock:
    """A verifier's clock, moved on by the test rather than by waiting."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_key_set_is_refetched_once_it_is_old(idp: JWKS, rsa_key: Key) -> None:
    clock = Clock()
    check = verifier(idp.url, jwks_refresh_seconds=0.5, jwks_min_refresh_seconds=0, clock=clock)
    await check.user_id(rsa_key.sign(claims()))
    clock.now += 0.375  # binary fractions: the sums are exact
    await check.user_id(rsa_key.sign(claims()))
    assert idp.fetches == 1
    clock.now += 0.125
    await check.user_id(rsa_key.sign(claims()))
    assert idp.fetches == 2


async def test_unknown_kids_refetch_at_most_once_per_min_interval(idp: JWKS, rsa_key: Key, rotated_key: Key) -> None:
    clock = Clock()
    check = verifier(idp.url, jwks_min_refresh_seconds=0.5, clock=clock)
    await check.user_id(rsa_key.sign(claims()))
    clock.now += 0.5
    await refused(check, rotated_key.sign(claims()))
    clock.now += 0.375
    await refused(check, rotated_key.sign(claims()))
    assert idp.fetches == 2  # the first bad kid refetched, the second (within the interval) did not
    clock.now += 0.125
    await refused(check, rotated_key.sign(claims()))
    assert idp.fetches == 3


async def test_concurrent_verifications_share_one_fetch(idp: JWKS, rsa_key: Key, rotated_key: Key) -> None:
    idp.delay = 0.2
    check = verifier(idp.url, jwks_min_refresh_seconds=0)
    users = await asyncio.gather(*(check.user_id(rsa_key.sign(claims(sub=f"u{n}"))) for n in range(10)))
    assert users == [f"u{n}" for n in range(10)]
    assert idp.fetches == 1
    idp.keys = [rsa_key.jwk(), rotated_key.jwk()]
    users = await asyncio.gather(*(check.user_id(rotated_key.sign(claims(sub=f"v{n}"))) for n in range(10)))
    assert users == [f"v{n}" for n in range(10)]
    assert idp.fetches == 2


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/jwks.json"


async def test_no_keys_and_no_identity_provider_is_unavailable(rsa_key: Key) -> None:
    with pytest.raises(ServiceUnavailable) as caught:
        await verifier(_closed_port_url()).user_id(rsa_key.sign(claims()))
    assert caught.value.code == "jwks_unavailable"
    assert caught.value.status_code == 503


async def test_a_failing_refetch_keeps_the_cached_keys(idp: JWKS, rsa_key: Key) -> None:
    check = verifier(idp.url, jwks_refresh_seconds=0, jwks_min_refresh_seconds=0)
    await check.user_id(rsa_key.sign(claims()))
    idp.failing = True
    assert await check.user_id(rsa_key.sign(claims(sub="still"))) == "still"
    assert idp.fetches == 2  # it did try


async def test_a_configured_public_key_verifies_without_a_jwks(rsa_key: Key, rotated_key: Key) -> None:
    check = verifier(None, public_key=rsa_key.public_pem)
    assert await check.user_id(rsa_key.sign(claims())) == "user-42"
    assert await check.user_id(jwt.encode(claims(sub="no-kid"), rsa_key.private, algorithm="RS256")) == "no-kid"
    assert await refused(check, rotated_key.sign(claims())) == "invalid token: bad signature"


@pytest.mark.parametrize(
    ("case", "options"),
    [
        ("neither", {"jwks_url": None}),
        ("both", {"public_key": "PEM"}),
        ("broken pem", {"jwks_url": None, "public_key": "-----BEGIN PUBLIC KEY-----\nnope\n"}),
        ("no algorithms", {"algorithms": []}),
        ("alg none", {"algorithms": ["RS256", "none"]}),
    ],
)
def test_misconfiguration_is_refused_at_construction(rsa_key: Key, case: str, options: dict[str, Any]) -> None:
    if options.get("public_key") == "PEM":
        options = {**options, "public_key": rsa_key.public_pem}
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        verifier("http://127.0.0.1:9/jwks.json", **options)


def test_api_keys_do_not_look_like_jwts(rsa_key: Key) -> None:
    assert not TokenVerifier.looks_like_jwt("sk-abc")
    assert not TokenVerifier.looks_like_jwt("sk-live.abc")
    assert not TokenVerifier.looks_like_jwt("a.b.c.d")
    assert TokenVerifier.looks_like_jwt(rsa_key.sign(claims()))


async def test_a_token_past_the_length_bound_is_refused_undecoded(
    idp: JWKS, rsa_key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    check = verifier(idp.url)
    fits = rsa_key.sign(claims(pad="p" * 5000))  # base64: 4 characters for 3 bytes
    assert len(fits) <= MAX_TOKEN_LENGTH
    assert await check.user_id(fits) == "user-42"
    too_long = rsa_key.sign(claims(pad="p" * MAX_TOKEN_LENGTH))

    def never(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("an over-long token was parsed")

    monkeypatch.setattr(jwt, "get_unverified_header", never)
    monkeypatch.setattr(jwt, "decode", never)
    assert await refused(check, too_long) == f"invalid token: longer than {MAX_TOKEN_LENGTH} characters"
    # Fifty million characters: refused by their length alone (``never`` above), however long the machine takes.
    assert (
        await refused(check, "e" * 50_000_000 + ".e.e") == f"invalid token: longer than {MAX_TOKEN_LENGTH} characters"
    )
