"""Command-line tools: ``python -m chat check``, ``token``, ``client``, ``--version``.

``check`` validates the ``CHAT_*`` settings exactly as the server does at
start-up and prints the effective ones, secrets hidden. ``token`` mints a
development JWT that a server configured by the same environment accepts,
and refuses what that server would refuse. Every refusal is one line on
stderr and exit status 2: never a traceback, never a secret.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)

from chat import __version__
from chat.auth import (
    MAX_ROOM_PATTERNS,
    MAX_TIME,
    ROOM_PATTERN,
    ROOM_RULE,
    USER_PATTERN,
    USER_RULE,
    Authenticator,
    TokenError,
)
from chat.keys import algorithm_for, load_public_key
from chat.settings import PREFIX, Settings, SettingsError, load_settings

#: The exit status of a bad setting or a refused argument (argparse's too).
EXIT_REFUSED = 2

HIDDEN = "(set, hidden)"
UNSET = "(unset)"

DESCRIPTION = """\
Tools for the chat server: check its settings, mint development tokens.

Settings come from CHAT_* environment variables (and the file CHAT_ENV_FILE
names), as for the server.
"""

EPILOG = """\
examples:
  python -m chat check            validate the settings and print them (secrets hidden)
  python -m chat check --quiet    validate only: what make run does before serving
  python -m chat token --sub alice --rooms 'lobby,game-*' --ttl 3600
  python -m chat client ws://127.0.0.1:8000/ws/lobby --user alice
  python -m chat --version

exit status: 0 on success; 2 for a bad setting or an argument the server
would refuse, with a message on stderr.
"""

CHECK_DESCRIPTION = """\
Validate the CHAT_* settings exactly as the server does at start-up (the
JWT public key included) and print every setting with its effective value.
Secrets show only whether they are set; the broker URL shows no credentials.
Exit status 0 when the server would start, 2 (with the reason on stderr)
when it would refuse to.
"""

TOKEN_DESCRIPTION = f"""\
Mint a development JWT and print only the token.

It is signed HS256 with CHAT_JWT_SECRET, or RS256/ES256 (by the key's type)
with --key and a PEM private key: RSA, or EC P-256. aud and iss default to
CHAT_JWT_AUDIENCE and CHAT_JWT_ISSUER.

What the server configured by this environment would refuse is refused here,
with a message and exit status 2:
  --sub    not {USER_RULE}
  --rooms  a pattern that is not {ROOM_RULE}
  --ttl    not a whole number of seconds above 0
  --key    not a PEM private key, not RSA or EC P-256, given while
           CHAT_JWT_SECRET is set, or not the private key of CHAT_JWT_PUBLIC_KEY
  --aud, --iss  not what CHAT_JWT_AUDIENCE and CHAT_JWT_ISSUER require
"""

TOKEN_EPILOG = """\
examples:
  export CHAT_JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
  TOKEN=$(python -m chat token --sub alice --rooms 'lobby,game-*' --ttl 3600)
  python -m chat token --sub ops --admin              (may read /status and /metrics)
  python -m chat token --sub bob --key private.pem    (RS256 or ES256)
"""


class Refused(Exception):
    """An argument the server would refuse; the message is safe to print."""


def effective_settings(settings: Settings) -> list[tuple[str, str]]:
    """Every setting as ``(variable, shown value)``, in the order :class:`Settings` declares them.

    Nothing secret is shown: a field kept out of the settings' repr shows only
    whether it is set, except the broker URL, shown without user, password or
    query (as ``/status`` shows it). A value no variable set is followed by
    ``(default)``, and ``None`` shows as ``(unset)``; the default node id shows
    ``<pid>`` for the pid, which is each server process's own.
    """
    shown: list[tuple[str, str]] = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if name == "broker_url":
            text = _masked_url(value)
        elif value is None:
            text = UNSET
        elif not field.repr:
            text = HIDDEN
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif name == "node_id" and name not in settings.model_fields_set:
            text = f"{value.rpartition('-')[0]}-<pid>"
        else:
            text = str(value)
        if value is not None and name not in settings.model_fields_set:
            text += " (default)"
        shown.append((f"{PREFIX}{name.upper()}", text))
    return shown


def _masked_url(url: str) -> str:
    if url.startswith(("redis://", "rediss://")):
        from chat.brokers.redis import mask_url  # late: imports the Redis client

        return mask_url(url)
    return url


def check(args: argparse.Namespace) -> int:
    """Validate the settings as the server does; print them unless ``--quiet``. Returns 0.

    Raises :class:`SettingsError` for a setting the server would refuse.
    """
    settings = load_settings()
    auth = Authenticator(settings)
    if args.quiet:
        return 0
    rows = effective_settings(settings)
    width = max(len(variable) for variable, _ in rows)
    for variable, text in rows:
        print(f"{variable:<{width}}  {text}")
    print(f"chat {__version__}: configuration OK; {auth.describe()}")
    return 0


def _user(value: str) -> str:
    if not USER_PATTERN.fullmatch(value):
        raise argparse.ArgumentTypeError(f"must be {USER_RULE} (the server's rule for sub)")
    return value


def _ttl(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of seconds above 0, not {value}")
    return seconds


def _rooms(value: str) -> list[str]:
    patterns = [pattern.strip() for pattern in value.split(",") if pattern.strip()]
    if not patterns:
        raise argparse.ArgumentTypeError("names no room pattern (leave it out for any room)")
    if len(patterns) > MAX_ROOM_PATTERNS:
        raise argparse.ArgumentTypeError(f"at most {MAX_ROOM_PATTERNS} patterns")
    for pattern in patterns:
        if not ROOM_PATTERN.fullmatch(pattern):
            raise argparse.ArgumentTypeError(f"{pattern!r} is not a room pattern: {ROOM_RULE}")
    return patterns


def _private_key(path: str) -> tuple[Any, str]:
    """The key in the PEM file ``path`` and the algorithm it signs; raises :class:`Refused`."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise Refused(f"--key {path}: cannot read it: {error.strerror or error}") from None
    try:
        key: Any = load_pem_private_key(data, password=None)
    except TypeError:
        raise Refused(f"--key {path}: encrypted; give an unencrypted PEM private key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise Refused(f"--key {path}: not a PEM private key") from None
    try:
        return key, algorithm_for(key)
    except ValueError:
        raise Refused(
            "--key must be an RSA or EC P-256 private key in PEM (the server verifies"
            " RS256 and ES256 only)"
        ) from None


def _spki(key: Any) -> bytes:
    return bytes(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def mint(args: argparse.Namespace) -> str:
    """The signed token the arguments describe.

    When the environment configures a key, the token is one that the server
    configured by it accepts. Raises :class:`Refused`, or
    :class:`SettingsError` for a bad setting.
    """
    settings = load_settings()
    now = int(time.time())
    if now + args.ttl >= MAX_TIME:
        raise Refused("--ttl ends beyond year 5138, which the server does not read as a time")
    claims: dict[str, Any] = {"sub": args.sub, "iat": now, "exp": now + args.ttl}
    if args.rooms is not None:
        claims["rooms"] = args.rooms
    if args.admin:
        claims["admin"] = True
    audience = args.aud or settings.jwt_audience
    issuer = args.iss or settings.jwt_issuer
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    if args.key:
        key, algorithm = _private_key(args.key)
        if settings.jwt_secret:
            raise Refused(
                f"--key signs {algorithm}, but CHAT_JWT_SECRET makes the server take HS256"
                " only; unset CHAT_JWT_SECRET to mint for a server with a public key"
            )
        if settings.jwt_public_key and _spki(key.public_key()) != _spki(
            load_public_key(settings.jwt_public_key)[0]
        ):
            raise Refused("--key is not the private key of CHAT_JWT_PUBLIC_KEY")
        token = jwt.encode(claims, key, algorithm=algorithm)
    elif settings.jwt_public_key:
        raise Refused("CHAT_JWT_PUBLIC_KEY is set: give --key with its private key")
    elif settings.jwt_secret:
        token = jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
    else:
        raise Refused("set CHAT_JWT_SECRET (HS256) or give --key private.pem")
    if settings.auth_enabled:
        try:
            Authenticator(settings).verify(token, now)
        except TokenError as error:
            raise Refused(f"the server would refuse this token: {error.detail}") from None
    return token


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m chat``: plain-text help, exit status 2 on bad usage."""
    parser = argparse.ArgumentParser(
        prog="python -m chat",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"chat {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    checker = commands.add_parser(
        "check",
        help="validate the settings as the server does and print them",
        description=CHECK_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    checker.add_argument(
        "--quiet", action="store_true", help="only validate: print nothing unless refused"
    )
    token = commands.add_parser(
        "token",
        help="mint a development JWT the server accepts",
        description=TOKEN_DESCRIPTION,
        epilog=TOKEN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("--sub", required=True, type=_user, help="the user")
    token.add_argument(
        "--rooms", type=_rooms, help="comma list of room patterns, * as wildcard (default: any)"
    )
    token.add_argument(
        "--ttl", type=_ttl, default=3600, help="seconds until exp, above 0 (default 3600)"
    )
    token.add_argument("--admin", action="store_true", help="may read /status and /metrics")
    token.add_argument("--aud", help="audience (default CHAT_JWT_AUDIENCE)")
    token.add_argument("--iss", help="issuer (default CHAT_JWT_ISSUER)")
    token.add_argument("--key", help="PEM private key for RS256/ES256 instead of the HS256 secret")
    _add_client(commands)
    return parser


CLIENT_DESCRIPTION = """\
A chat client that stays connected: it reconnects with backoff, recovers
missed messages and retries sends without duplicating them (chat.client,
docs/client.md; needs the websockets library: pip install 'chat[client]').

Interactive by default: type lines to send them to the current room;
/join ROOM, /leave ROOM, /who [ROOM], /quit. Exit status 0, 1 when the
client closed for good (the reason on stderr), 2 for bad usage.

A JWT comes from --token-file PATH or the CHAT_CLIENT_TOKEN environment
variable; --token puts it on the command line, where other local users
can read it (ps, /proc). Without a token or --user, the client is
anon-<random>, the same user across its reconnects.
"""

CLIENT_EPILOG = """\
examples:
  python -m chat client ws://127.0.0.1:8000/ws/lobby --user alice
  python -m chat client ws://a:8000/ws/lobby ws://b:8000/ws/lobby --token-file ~/.chat-token
  CHAT_CLIENT_TOKEN="$TOKEN" python -m chat client ws://127.0.0.1:8000/ws/lobby
  python -m chat client ws://127.0.0.1:8000/ws/lobby --user bot --send 'hello' --send 'bye'
  python -m chat client ws://127.0.0.1:8000/ws/lobby --listen --json --count 10
"""


def _add_client(commands: Any) -> None:
    client = commands.add_parser(
        "client",
        help="a line chat, or a scriptable sender and listener",
        description=CLIENT_DESCRIPTION,
        epilog=CLIENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    client.add_argument(
        "urls", nargs="+", metavar="URL", help="ws://host:port/ws/ROOM, one per server"
    )
    who = client.add_mutually_exclusive_group()
    who.add_argument("--user", type=_user, help="the user to be (servers without JWT auth)")
    who.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="read the JWT (servers with JWT auth) from PATH; or set CHAT_CLIENT_TOKEN",
    )
    who.add_argument("--token", help="a JWT on the command line: visible to other local users (ps)")
    client.add_argument("--room", action="append", help="another room to join (repeatable)")
    mode = client.add_mutually_exclusive_group()
    mode.add_argument(
        "--send", action="append", metavar="TEXT", help="send TEXT, wait for its ack, exit"
    )
    mode.add_argument("--listen", action="store_true", help="print what arrives, do not read")
    client.add_argument("--json", action="store_true", help="one JSON object per line")
    client.add_argument(
        "--count", type=int, default=0, help="with --listen: exit after this many messages"
    )


#: The environment variable ``python -m chat client`` reads a JWT from.
CLIENT_TOKEN_VARIABLE = "CHAT_CLIENT_TOKEN"


def client_token(args: argparse.Namespace, environ: dict[str, str]) -> str | None:
    """The JWT for ``python -m chat client``: ``--token``, ``--token-file`` (its content,
    blank space around it dropped), or ``CHAT_CLIENT_TOKEN`` when neither nor ``--user``
    is given. Raises :class:`Refused` for a file that cannot be read or holds no token."""
    if args.token is not None:
        return str(args.token)
    if args.token_file is not None:
        path: Path = args.token_file
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise Refused(f"cannot read the token file {str(path)!r}: {reason}") from None
        except UnicodeDecodeError:
            raise Refused(f"the token file {str(path)!r} is not UTF-8 text") from None
        if not token:
            raise Refused(f"the token file {str(path)!r} is empty")
        return token
    if args.user is None:
        return environ.get(CLIENT_TOKEN_VARIABLE, "").strip() or None
    return None


def _run_client(args: argparse.Namespace) -> int:
    try:
        args.token = client_token(args, dict(os.environ))
    except Refused as error:
        print(f"chat client: {error}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        from chat.client.cli import run  # late: the server's tools need no websockets
    except ImportError as error:
        print(f"chat client: {error}", file=sys.stderr)
        return EXIT_REFUSED
    try:
        return run(args)
    except ValueError as error:  # a URL or room the client refuses
        print(f"chat client: {error}", file=sys.stderr)
        return EXIT_REFUSED


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status.

    Bad usage (argparse), ``--help`` and ``--version`` raise :class:`SystemExit`
    as argparse does (2 for bad usage, 0 otherwise).
    """
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            return check(args)
        if args.command == "client":
            return _run_client(args)
        print(mint(args))
    except SettingsError as error:
        print(f"chat: configuration error: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except Refused as error:
        print(f"chat token: {error}", file=sys.stderr)
        return EXIT_REFUSED
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
