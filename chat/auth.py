"""JWT authentication and room authorization. Pure: time comes in as ``now``.

The algorithm is fixed by the configuration, never taken from the token:
HS256 with ``CHAT_JWT_SECRET``, or RS256/ES256 (by the key's type) with
``CHAT_JWT_PUBLIC_KEY``. ``sub`` and ``exp`` are required; ``nbf``, ``aud``
and ``iss`` are checked; ``exp`` and ``nbf`` allow ``CHAT_JWT_LEEWAY`` seconds
of clock skew. Time checks use the injected clock, not the machine's.

Nothing here ever puts a token, or a part of one, in an error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jwt

from chat.keys import load_public_key
from chat.settings import NAME_PATTERN, Settings

#: A ``sub`` accepted as a user name: the characters of emails, UUIDs and
#: common identity-provider subjects (``auth0|123``), nothing that could
#: break a log line, a status filter or a key.
USER_PATTERN = re.compile(r"[A-Za-z0-9_.@+:=|\-]{1,128}")
#: :data:`USER_PATTERN` in words, for messages.
USER_RULE = "1 to 128 of A-Z a-z 0-9 _ . @ + : = | -"
#: A ``rooms`` claim pattern: room characters and ``*``.
ROOM_PATTERN = re.compile(r"[A-Za-z0-9_.\-*]{1,64}")
#: :data:`ROOM_PATTERN` in words, for messages.
ROOM_RULE = "1 to 64 of A-Z a-z 0-9 _ . - and *"
#: The most patterns one ``rooms`` claim may hold.
MAX_ROOM_PATTERNS = 256
#: ``exp`` and ``nbf`` beyond this (Unix seconds, year 5138) are not real times.
MAX_TIME = 1e11


class TokenError(Exception):
    """A token was refused. ``reason`` is a short stable key; the message is safe to show."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for."""

    user: str
    #: Room patterns (``*`` wildcard) the user may join; None means any room.
    rooms: tuple[str, ...] | None
    admin: bool
    #: The token's ``exp`` (Unix seconds).
    expires_at: float

    def may_join(self, room: str) -> bool:
        """Whether ``room`` (a valid room id) matches the token's ``rooms`` claim.

        Any room without the claim. ``*`` matches any run of room characters.
        """
        if not NAME_PATTERN.fullmatch(room):
            return False
        if self.rooms is None:
            return True
        return any(wildcard_match(pattern, room) for pattern in self.rooms)


def bearer_token(authorization: str) -> str | None:
    """The credentials of an ``Authorization: Bearer <token>`` header value, if any."""
    scheme, _, credentials = authorization.partition(" ")
    token = credentials.strip()
    return token if scheme.lower() == "bearer" and token else None


def wildcard_match(pattern: str, name: str) -> bool:
    """Whether ``name`` matches ``pattern``, where ``*`` matches any run of characters.

    Linear in the lengths, whatever the pattern (no backtracking): each piece
    between stars is found leftmost, in order.
    """
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return pattern == name
    first, last = pieces[0], pieces[-1]
    if len(first) + len(last) > len(name) or not name.startswith(first):
        return False
    if not name.endswith(last):
        return False
    position, end = len(first), len(name) - len(last)
    for piece in pieces[1:-1]:
        found = name.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


class Authenticator:
    """Verifies tokens against the configured key; :attr:`enabled` is False in open mode."""

    def __init__(self, settings: Settings) -> None:
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway
        self._key: Any = None
        self._algorithms: list[str] = []
        if settings.jwt_secret:
            self._key = settings.jwt_secret
            self._algorithms = ["HS256"]
        elif settings.jwt_public_key:
            self._key, algorithm = load_public_key(settings.jwt_public_key)
            self._algorithms = [algorithm]

    @property
    def enabled(self) -> bool:
        """True when a key is configured: every session needs a valid token."""
        return bool(self._algorithms)

    @property
    def algorithm(self) -> str | None:
        """The one algorithm tokens must use (None in open mode)."""
        return self._algorithms[0] if self._algorithms else None

    def describe(self) -> str:
        """The authentication mode in a few words, for the start-up log and ``check``."""
        if self._algorithms:
            return f"JWT auth on ({self._algorithms[0]})"
        return "open mode: no JWT key, users name themselves with ?user="

    def verify(self, token: str, now: float) -> Identity:
        """The identity of a valid ``token`` at ``now`` (Unix seconds).

        Raises :class:`TokenError`.
        """
        if not self.enabled:
            raise TokenError("auth_off", "token authentication is not configured")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require": ["sub", "exp"],
                    # exp, nbf and iat are checked below against the injected clock.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    # Always checked: with no audience configured, a token meant for
                    # some other service (one with an aud) is refused.
                    "verify_aud": True,
                    "verify_iss": self._issuer is not None,
                },
            )
        except jwt.MissingRequiredClaimError as error:
            raise TokenError("invalid_token", f"token has no {error.claim} claim") from None
        except jwt.InvalidAudienceError:
            raise TokenError("invalid_token", "token audience does not match") from None
        except jwt.InvalidIssuerError:
            raise TokenError("invalid_token", "token issuer does not match") from None
        except Exception:  # any other InvalidTokenError, or what a crafted token makes PyJWT raise
            raise TokenError("invalid_token", "invalid token") from None
        return self._identity(claims, now)

    def _identity(self, claims: dict[str, Any], now: float) -> Identity:
        exp = claims["exp"]
        if not _is_time(exp):
            raise TokenError("invalid_token", "token exp must be a time in Unix seconds")
        if now > exp + self._leeway:
            raise TokenError("token_expired", "token expired")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not _is_time(nbf):
                raise TokenError("invalid_token", "token nbf must be a time in Unix seconds")
            if now < nbf - self._leeway:
                raise TokenError("token_not_yet_valid", "token not valid yet")
        sub = claims["sub"]
        if not isinstance(sub, str) or not USER_PATTERN.fullmatch(sub):
            raise TokenError("invalid_token", f"token sub must be {USER_RULE}")
        if "rooms" in claims and claims["rooms"] is None:
            raise TokenError("invalid_token", "token rooms must be a list of room patterns")
        rooms = claims.get("rooms")
        if rooms is not None and (
            not isinstance(rooms, list)
            or len(rooms) > MAX_ROOM_PATTERNS
            or not all(isinstance(p, str) and ROOM_PATTERN.fullmatch(p) for p in rooms)
        ):
            raise TokenError("invalid_token", "token rooms must be a list of room patterns")
        admin = claims.get("admin", False)
        if not isinstance(admin, bool):
            raise TokenError("invalid_token", "token admin must be true or false")
        return Identity(
            user=sub,
            rooms=None if rooms is None else tuple(rooms),
            admin=admin,
            expires_at=float(exp),
        )


def _is_time(value: Any) -> bool:
    """A finite number of Unix seconds within reason (no NaN, no 10**400)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return abs(value) < MAX_TIME
