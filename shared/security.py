import hmac
from collections.abc import Mapping


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: ``x-api-key``, else an ``Authorization: Bearer`` token (``Bearer`` in any case).

    The one rule for authentication and rate limits alike, so one key is one identity however it is sent.
    """
    if key := headers.get("x-api-key"):
        return key
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and (token := token.strip()):
        return token
    return None


def key_matches(candidate: str | None, keys: tuple[str, ...]) -> bool:
    """Constant-time check against every configured key (no early exit reveals which one matched)."""
    if not candidate:
        return False
    given = candidate.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched
