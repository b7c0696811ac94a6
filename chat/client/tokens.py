"""When to refresh a JWT: read its ``exp`` (unverified: the server verifies) and plan. Pure."""

from __future__ import annotations

import base64
import binascii
import json


def expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT as Unix seconds, or None (no ``exp``, or not a JWT).

    The signature is not checked: the client only plans when to ask for a
    new token; the server decides whether a token is valid.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return float(exp)
    return None


#: The shortest wait before asking the provider again: an expired token is not a hot loop.
MIN_REFRESH_DELAY = 1.0
#: The longest wait after tokens that did not extend ``exp``.
MAX_STALE_DELAY = 60.0


def refresh_delay(remaining: float, margin: float, stale: int = 0) -> float:
    """Seconds from now to ask for a new token, for one valid ``remaining`` more seconds.

    ``margin`` seconds before ``exp``, but never later than three quarters of
    the way, so a short-lived token is refreshed with time to spare; never
    sooner than :data:`MIN_REFRESH_DELAY` (a token already expired included).
    ``stale`` counts the tokens in a row whose ``exp`` did not advance (a
    provider that caches): the wait doubles with each, up to
    :data:`MAX_STALE_DELAY`, even past ``exp``; the server then ends the
    session (1008) rather than the client asking for ever.
    """
    delay = max(MIN_REFRESH_DELAY, remaining - min(margin, max(remaining, 0.0) / 4))
    if stale > 0:
        delay = max(delay, min(MAX_STALE_DELAY, MIN_REFRESH_DELAY * 2.0 ** min(stale, 16)))
    return delay
