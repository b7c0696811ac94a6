"""Command-line tools: ``python -m chat token ...`` mints a development token.

    CHAT_JWT_SECRET=dev-secret python -m chat token --sub alice --rooms 'lobby,game-*' --ttl 3600

HS256 with ``CHAT_JWT_SECRET`` (as the server is configured), or RS256/ES256
with ``--key private.pem``. ``aud`` and ``iss`` default to
``CHAT_JWT_AUDIENCE`` and ``CHAT_JWT_ISSUER``. Only the token is printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from chat.auth import algorithm_for
from chat.settings import SettingsError, load_settings


def mint(args: argparse.Namespace) -> str:
    """The signed token the arguments describe; raises :class:`SystemExit` with a message."""
    settings = load_settings()
    now = int(time.time())
    claims: dict[str, Any] = {"sub": args.sub, "iat": now, "exp": now + args.ttl}
    if args.rooms:
        claims["rooms"] = [room.strip() for room in args.rooms.split(",") if room.strip()]
    if args.admin:
        claims["admin"] = True
    audience = args.aud or settings.jwt_audience
    issuer = args.iss or settings.jwt_issuer
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    if args.key:
        key: Any = load_pem_private_key(Path(args.key).read_bytes(), password=None)
        try:
            algorithm = algorithm_for(key)
        except ValueError:
            raise SystemExit(
                "chat token: --key must be an RSA or EC P-256 private key in PEM"
            ) from None
        return jwt.encode(claims, key, algorithm=algorithm)
    if not settings.jwt_secret:
        raise SystemExit("chat token: set CHAT_JWT_SECRET (HS256) or give --key private.pem")
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chat", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="mint a development JWT")
    token.add_argument("--sub", required=True, help="the user")
    token.add_argument("--rooms", help="comma list of room patterns, * as wildcard")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until exp (default 3600)")
    token.add_argument("--admin", action="store_true", help="allow /status and /metrics")
    token.add_argument("--aud", help="audience (default CHAT_JWT_AUDIENCE)")
    token.add_argument("--iss", help="issuer (default CHAT_JWT_ISSUER)")
    token.add_argument("--key", help="PEM private key for RS256/ES256 instead of the HS256 secret")
    args = parser.parse_args(argv)
    try:
        print(mint(args))
    except SettingsError as error:
        print(f"chat: configuration error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
