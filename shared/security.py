import hmac


def key_matches(candidate: str | None, keys: tuple[str, ...]) -> bool:
    """Constant-time check against every configured key (no early exit reveals which one matched)."""
    if not candidate:
        return False
    given = candidate.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode())
    return matched
