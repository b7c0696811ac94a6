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


def refresh_delay(remaining: float, margin: float) -> float:
    """Seconds from now to ask for a new token, for one valid ``remaining`` more seconds.

    ``margin`` seconds before ``exp``, but never later than three quarters of
    the way, so a short-lived token is refreshed with time to spare.
    """
    if remaining <= 0:
        return 0.0
    return max(0.0, remaining - min(margin, remaining / 4))
