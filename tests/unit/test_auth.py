"""JWT verification and room authorization (docs/auth.md); ``now`` passed in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from chat.auth import Authenticator, Identity, TokenError
from chat.keys import load_public_key
from chat.settings import Settings

#: The injected "current" Unix time; every exp and nbf is relative to it.
NOW = 1_750_000_000
LEEWAY = 30.0
SECRET = "s3cret-" + "x" * 32
OTHER_SECRET = "other-" + "y" * 32
AUDIENCE = "chat.example.com"
ISSUER = "https://issuer.example.com"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


RSA_PEM = public_pem(RSA_KEY)
EC_PEM = public_pem(EC_KEY)

OPEN = Authenticator(Settings())
HS = Authenticator(Settings(jwt_secret=SECRET, jwt_leeway=LEEWAY))
HS_NO_LEEWAY = Authenticator(Settings(jwt_secret=SECRET, jwt_leeway=0.0))
HS_AUD_ISS = Authenticator(
    Settings(jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER, jwt_leeway=LEEWAY)
)
RS = Authenticator(Settings(jwt_public_key=RSA_PEM, jwt_leeway=LEEWAY))
ES = Authenticator(Settings(jwt_public_key=EC_PEM, jwt_leeway=LEEWAY))


def claims(*, drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    """A valid payload for ``alice`` expiring a minute after NOW, with ``changes`` applied."""
    payload: dict[str, Any] = {"sub": "alice", "exp": NOW + 60}
    payload.update(changes)
    for name in drop:
        del payload[name]
    return payload


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unsigned_token(payload: dict[str, Any]) -> str:
    """An ``alg=none`` token, built by hand: PyJWT would not help forge one."""
    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(payload)}."


def hs256_keyed_with_text(payload: dict[str, Any], key_text: str) -> str:
    """An HS256 token whose HMAC secret is ``key_text`` (PyJWT refuses a PEM as a secret)."""
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment(payload)}"
    signature = hmac.new(key_text.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def tampered(token: str, payload: dict[str, Any]) -> str:
    """``token`` with its payload replaced and its old signature kept."""
    header, _, signature = token.split(".")
    return f"{header}.{segment(payload)}.{signature}"


def configured_pem(settings: Settings) -> str:
    assert settings.jwt_public_key is not None
    return settings.jwt_public_key


# The exact text the RS256 server holds (Settings strips the PEM).
RSA_CONFIGURED_PEM = configured_pem(Settings(jwt_public_key=RSA_PEM))
EC_CONFIGURED_PEM = configured_pem(Settings(jwt_public_key=EC_PEM))


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authenticator", "enabled", "algorithm"),
    [
        pytest.param(OPEN, False, None, id="open"),
        pytest.param(HS, True, "HS256", id="secret"),
        pytest.param(RS, True, "RS256", id="rsa-key"),
        pytest.param(ES, True, "ES256", id="ec-p256-key"),
    ],
)
def test_the_configured_key_fixes_enabled_and_the_algorithm(
    authenticator: Authenticator, enabled: bool, algorithm: str | None
) -> None:
    assert (authenticator.enabled, authenticator.algorithm) == (enabled, algorithm)


def test_the_mode_is_described_with_the_algorithm_or_as_open() -> None:
    assert HS.describe() == "JWT auth on (HS256)"
    assert OPEN.describe() == "open mode: no JWT key, users name themselves with ?user="


@pytest.mark.parametrize(
    ("pem", "algorithm"),
    [pytest.param(RSA_PEM, "RS256", id="rsa"), pytest.param(EC_PEM, "ES256", id="ec-p256")],
)
def test_load_public_key_names_the_algorithm_of_the_key(pem: str, algorithm: str) -> None:
    assert load_public_key(pem)[1] == algorithm


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param("", id="empty"),
        pytest.param("not a key", id="garbage"),
        pytest.param(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", id="bad-pem-body"
        ),
        pytest.param(public_pem(ec.generate_private_key(ec.SECP384R1())), id="ec-p384"),
        pytest.param(
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            .decode(),
            id="ed25519",
        ),
    ],
)
def test_load_public_key_refuses_anything_but_rsa_and_ec_p256(pem: str) -> None:
    with pytest.raises(ValueError, match=r"^(not a PEM public key|only RSA and EC P-256 .*)$"):
        load_public_key(pem)


# --- accepted tokens -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authenticator", "token", "identity"),
    [
        pytest.param(
            HS,
            hs256(claims(rooms=["lobby", "game-*"], admin=True)),
            Identity(user="alice", rooms=("lobby", "game-*"), admin=True, expires_at=NOW + 60),
            id="hs256-all-claims",
        ),
        pytest.param(
            HS,
            hs256(claims()),
            Identity(user="alice", rooms=None, admin=False, expires_at=NOW + 60),
            id="hs256-no-rooms-no-admin",
        ),
        pytest.param(
            HS,
            hs256(claims(rooms=[], admin=False)),
            Identity(user="alice", rooms=(), admin=False, expires_at=NOW + 60),
            id="empty-rooms",
        ),
        pytest.param(
            HS,
            hs256(claims(exp=NOW + 60.5)),
            Identity(user="alice", rooms=None, admin=False, expires_at=NOW + 60.5),
            id="fractional-exp",
        ),
        pytest.param(
            HS,
            hs256(claims(exp=NOW - LEEWAY)),
            Identity(user="alice", rooms=None, admin=False, expires_at=NOW - LEEWAY),
            id="expired-within-leeway",
        ),
        pytest.param(
            HS_NO_LEEWAY,
            hs256(claims(exp=NOW)),
            Identity(user="alice", rooms=None, admin=False, expires_at=NOW),
            id="expiring-now-without-leeway",
        ),
        pytest.param(
            HS,
            hs256(claims(nbf=NOW + LEEWAY)),
            Identity(user="alice", rooms=None, admin=False, expires_at=NOW + 60),
            id="nbf-within-leeway",
        ),
        pytest.param(
            HS,
            hs256(claims(nbf=NOW - 60)),
            Identity(user="alice", rooms=None, admin=False, expires_at=NOW + 60),
            id="nbf-past",
        ),
        pytest.param(
            HS,
            hs256(claims(iss="someone-else")),
            Identity(user="alice", rooms=None, admin=False, expires_at=NOW + 60),
            id="iss-unchecked-when-not-configured",
        ),
        pytest.param(
            HS_AUD_ISS,
            hs256(claims(aud=AUDIENCE, iss=ISSUER)),
            Identity(user="alice", rooms=None, admin=False, expires_at=NOW + 60),
            id="aud-iss-matching",
        ),
        pytest.param(
            HS_AUD_ISS,
            hs256(claims(aud=["other.example.com", AUDIENCE], iss=ISSUER)),
            Identity(user="alice", rooms=None, admin=False, expires_at=NOW + 60),
            id="aud-list-containing-ours",
        ),
        pytest.param(
            HS,
            hs256(claims(sub="u" * 128)),
            Identity(user="u" * 128, rooms=None, admin=False, expires_at=NOW + 60),
            id="sub-128-chars",
        ),
        pytest.param(
            HS,
            hs256_keyed_with_text(claims(), SECRET),
            Identity(user="alice", rooms=None, admin=False, expires_at=NOW + 60),
            # The key-confusion tokens below are refused for their key, not their shape.
            id="hand-built-hs256",
        ),
        pytest.param(
            RS,
            jwt.encode(claims(rooms=["lobby"]), RSA_KEY, algorithm="RS256"),
            Identity(user="alice", rooms=("lobby",), admin=False, expires_at=NOW + 60),
            id="rs256",
        ),
        pytest.param(
            ES,
            jwt.encode(claims(admin=True), EC_KEY, algorithm="ES256"),
            Identity(user="alice", rooms=None, admin=True, expires_at=NOW + 60),
            id="es256",
        ),
    ],
)
def test_valid_token_gives_its_identity(
    authenticator: Authenticator, token: str, identity: Identity
) -> None:
    assert authenticator.verify(token, NOW) == identity


# --- refused tokens --------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    name: str
    authenticator: Authenticator
    token: str
    reason: str


_VALID = hs256(claims())

REFUSALS = [
    Refusal("open-mode", OPEN, _VALID, "auth_off"),
    Refusal("empty-string", HS, "", "invalid_token"),
    Refusal("garbage", HS, "not-a-jwt-at-all", "invalid_token"),
    Refusal("garbage-three-parts", HS, "AAAAAAAA.BBBBBBBB.CCCCCCCC", "invalid_token"),
    Refusal("no-signature-part", HS, _VALID.rsplit(".", 1)[0], "invalid_token"),
    Refusal("alg-none-on-hs256", HS, unsigned_token(claims()), "invalid_token"),
    Refusal("alg-none-on-rs256", RS, unsigned_token(claims()), "invalid_token"),
    Refusal("other-secret", HS, hs256(claims(), OTHER_SECRET), "invalid_token"),
    # No audience configured: a token meant for another service is not ours.
    Refusal("aud-when-none-configured", HS, hs256(claims(aud="billing")), "invalid_token"),
    Refusal("rooms-null", HS, hs256(claims(rooms=None)), "invalid_token"),
    Refusal("exp-huge-int", HS, hs256(claims(exp=10**400)), "invalid_token"),
    Refusal("nbf-huge-int", HS, hs256(claims(nbf=10**400)), "invalid_token"),
    Refusal("sub-with-space", HS, hs256(claims(sub="alice smith")), "invalid_token"),
    Refusal("sub-line-separator", HS, hs256(claims(sub="a\u2028b")), "invalid_token"),
    Refusal(
        "tampered-payload",
        HS,
        tampered(_VALID, claims(sub="alice", admin=True)),
        "invalid_token",
    ),
    Refusal("expired-beyond-leeway", HS, hs256(claims(exp=NOW - LEEWAY - 1)), "token_expired"),
    Refusal("expired-no-leeway", HS_NO_LEEWAY, hs256(claims(exp=NOW - 1)), "token_expired"),
    Refusal(
        "nbf-beyond-leeway",
        HS,
        hs256(claims(nbf=NOW + LEEWAY + 1)),
        "token_not_yet_valid",
    ),
    Refusal("nbf-not-a-number", HS, hs256(claims(nbf="later")), "invalid_token"),
    Refusal("no-exp", HS, hs256(claims(drop=("exp",))), "invalid_token"),
    Refusal("exp-null", HS, hs256(claims(exp=None)), "invalid_token"),
    Refusal("exp-word", HS, hs256(claims(exp="tomorrow")), "invalid_token"),
    Refusal("exp-numeric-string", HS, hs256(claims(exp=str(NOW + 60))), "invalid_token"),
    Refusal("exp-bool", HS, hs256(claims(exp=True)), "invalid_token"),
    Refusal("exp-list", HS, hs256(claims(exp=[NOW + 60])), "invalid_token"),
    Refusal("no-sub", HS, hs256(claims(drop=("sub",))), "invalid_token"),
    Refusal("sub-number", HS, hs256(claims(sub=42)), "invalid_token"),
    Refusal("sub-list", HS, hs256(claims(sub=["alice"])), "invalid_token"),
    Refusal("sub-empty", HS, hs256(claims(sub="")), "invalid_token"),
    Refusal("sub-129-chars", HS, hs256(claims(sub="u" * 129)), "invalid_token"),
    Refusal("sub-newline", HS, hs256(claims(sub="ali\nce")), "invalid_token"),
    Refusal("sub-nul", HS, hs256(claims(sub="ali\x00ce")), "invalid_token"),
    Refusal("sub-del", HS, hs256(claims(sub="alice\x7f")), "invalid_token"),
    Refusal("wrong-aud", HS_AUD_ISS, hs256(claims(aud="other", iss=ISSUER)), "invalid_token"),
    Refusal("missing-aud", HS_AUD_ISS, hs256(claims(iss=ISSUER)), "invalid_token"),
    Refusal("wrong-iss", HS_AUD_ISS, hs256(claims(aud=AUDIENCE, iss="mallory")), "invalid_token"),
    Refusal("missing-iss", HS_AUD_ISS, hs256(claims(aud=AUDIENCE)), "invalid_token"),
    Refusal("rooms-string", HS, hs256(claims(rooms="lobby")), "invalid_token"),
    Refusal("rooms-object", HS, hs256(claims(rooms={"lobby": True})), "invalid_token"),
    Refusal("rooms-slash", HS, hs256(claims(rooms=["lobby", "a/b"])), "invalid_token"),
    Refusal("rooms-space", HS, hs256(claims(rooms=["game 1"])), "invalid_token"),
    Refusal("rooms-empty-pattern", HS, hs256(claims(rooms=[""])), "invalid_token"),
    Refusal("rooms-65-chars", HS, hs256(claims(rooms=["r" * 65])), "invalid_token"),
    Refusal("rooms-number", HS, hs256(claims(rooms=["lobby", 7])), "invalid_token"),
    Refusal("rooms-null-entry", HS, hs256(claims(rooms=[None])), "invalid_token"),
    Refusal("rooms-257-entries", HS, hs256(claims(rooms=["lobby"] * 257)), "invalid_token"),
    Refusal("admin-string", HS, hs256(claims(admin="true")), "invalid_token"),
    Refusal("admin-one", HS, hs256(claims(admin=1)), "invalid_token"),
    Refusal("admin-zero", HS, hs256(claims(admin=0)), "invalid_token"),
    Refusal(
        "hs256-keyed-with-rsa-pem-on-rs256",
        RS,
        hs256_keyed_with_text(claims(), RSA_CONFIGURED_PEM),
        "invalid_token",
    ),
    Refusal(
        "hs256-keyed-with-rsa-pem-and-newline-on-rs256",
        RS,
        hs256_keyed_with_text(claims(), RSA_PEM),
        "invalid_token",
    ),
    Refusal(
        "hs256-keyed-with-ec-pem-on-es256",
        ES,
        hs256_keyed_with_text(claims(), EC_CONFIGURED_PEM),
        "invalid_token",
    ),
    Refusal(
        "rs256-on-hs256",
        HS,
        jwt.encode(claims(), RSA_KEY, algorithm="RS256"),
        "invalid_token",
    ),
    Refusal(
        "es256-on-rs256",
        RS,
        jwt.encode(claims(), EC_KEY, algorithm="ES256"),
        "invalid_token",
    ),
    Refusal(
        "rs256-other-key",
        RS,
        jwt.encode(claims(), OTHER_RSA_KEY, algorithm="RS256"),
        "invalid_token",
    ),
]


@pytest.mark.parametrize("case", REFUSALS, ids=lambda case: case.name)
def test_refused_token_raises_token_error_with_its_reason(case: Refusal) -> None:
    with pytest.raises(TokenError) as caught:
        case.authenticator.verify(case.token, NOW)
    assert caught.value.reason == case.reason


@pytest.mark.parametrize("case", REFUSALS, ids=lambda case: case.name)
def test_refusal_message_never_contains_the_token_or_a_part_of_it(case: Refusal) -> None:
    with pytest.raises(TokenError) as caught:
        case.authenticator.verify(case.token, NOW)
    pieces = [piece for piece in (case.token, *case.token.split(".")) if piece]
    for text in (str(caught.value), caught.value.detail):
        for piece in pieces:
            assert piece not in text


# --- room authorization ----------------------------------------------------------------------


def identity(rooms: tuple[str, ...] | None) -> Identity:
    return Identity(user="alice", rooms=rooms, admin=False, expires_at=NOW + 60)


@pytest.mark.parametrize(
    ("rooms", "room", "allowed"),
    [
        (None, "anything", True),
        (None, "game-1", True),
        ((), "lobby", False),
        (("lobby",), "lobby", True),
        (("lobby",), "lobby2", False),
        (("lobby",), "lobb", False),
        (("lobby",), "Lobby", False),
        (("a.b",), "a.b", True),
        (("a.b",), "axb", False),
        (("game-*",), "game-1", True),
        (("game-*",), "game-", True),
        (("game-*",), "game-a.b_C-9", True),
        (("game-*",), "games", False),
        (("game-*",), "game", False),
        (("game-*",), "xgame-1", False),
        (("*-final",), "cup-final", True),
        (("*-final",), "cup-finals", False),
        (("*",), "lobby", True),
        (("*",), "A-z_0.9", True),
        (("lobby", "game-*"), "game-7", True),
        (("lobby", "game-*"), "lobby", True),
        (("lobby", "game-*"), "chat", False),
    ],
)
def test_may_join_matches_room_patterns(
    rooms: tuple[str, ...] | None, room: str, allowed: bool
) -> None:
    assert identity(rooms).may_join(room) is allowed


@pytest.mark.parametrize("pattern", ["*", "game-*", "*-final", "a*b"])
@pytest.mark.parametrize(
    "intruder", ["/", " ", "\n", "\x00", ":", "*", "?", "é", "\u0661", "\uff21"]
)
def test_star_never_matches_a_character_outside_room_ids(pattern: str, intruder: str) -> None:
    # Build a room that the pattern would match if ``*`` spanned the intruder.
    room = pattern.replace("*", f"x{intruder}y")
    assert identity((pattern,)).may_join(room) is False
