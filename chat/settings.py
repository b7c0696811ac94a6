"""The one immutable settings object, read from ``CHAT_*`` environment variables.

Only :func:`load_settings` reads the environment; everything else receives a
:class:`Settings` built at the edge. A bad value raises :class:`SettingsError`
whose message names the variable, so a misconfigured server refuses to start
with a sentence instead of a traceback.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from chat.forwarded import TrustedProxies, parse_proxies
from chat.keys import load_public_key

PREFIX = "CHAT_"

#: Room ids and user names: checked before they touch any key, channel or log.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _default_node_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:100]
    return f"{host}-{os.getpid()}"


class SettingsError(ValueError):
    """A ``CHAT_*`` setting is missing, malformed or out of range."""


class Settings(BaseSettings):
    """Every app setting, validated and frozen. Durations are float seconds."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, frozen=True, extra="forbid", allow_inf_nan=False
    )

    # repr=False: URLs and secrets may hold credentials; they never reach a log line.
    broker_url: str = Field(default="memory://", repr=False)
    node_id: str = Field(default_factory=_default_node_id, pattern=r"^[A-Za-z0-9_.\-]{1,128}$")
    heartbeat_interval: float = Field(default=25.0, gt=0)
    heartbeat_timeout: float = Field(default=10.0, gt=0)
    idle_after: float = Field(default=60.0, gt=0)
    idle_timeout: float = Field(default=600.0, ge=0)
    closed_retention: float = Field(default=300.0, ge=0)
    closed_max: int = Field(default=10_000, ge=0)
    drain_timeout: float = Field(default=2.0, gt=0, le=60)
    max_message_bytes: int = Field(default=65536, ge=64, le=16 * 1024 * 1024)
    rate: float = Field(default=20.0, gt=0)
    burst: int = Field(default=40, ge=1)
    send_queue: int = Field(default=1000, ge=1)
    max_sessions: int = Field(default=10_000, ge=1)
    max_sessions_per_user: int = Field(default=10, ge=0)
    max_sessions_per_ip: int = Field(default=0, ge=0)
    max_rooms_per_session: int = Field(default=128, ge=1)
    ws_compression: bool = False
    history_size: int = Field(default=100, ge=0)
    history_ttl: float = Field(default=300.0, ge=0)
    history_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    send_id_window: float = Field(default=300.0, ge=0)
    jwt_secret: str | None = Field(default=None, repr=False)
    jwt_public_key: str | None = Field(default=None, repr=False)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway: float = Field(default=30.0, ge=0)
    allowed_origins: str | None = None
    status_token: str | None = Field(default=None, repr=False)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    trusted_proxies: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only explicit values: load_settings() decides where they come from,
        # so that tests and embedders never pick up the process environment.
        return (init_settings,)

    @field_validator("broker_url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://")):
            # Never echo the URL: it may carry a password.
            raise ValueError("must start with memory://, redis:// or rediss://")
        try:
            urlsplit(value).port  # noqa: B018 -- parsing it is the check
        except ValueError:
            # The Redis client could never connect, and status could not show it.
            raise ValueError("has a port that is not a number from 0 to 65535") from None
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _long_secret(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode()) < 32:
            raise ValueError(
                "must be at least 32 bytes (python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
        return value or None

    @field_validator("status_token")
    @classmethod
    def _long_token(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("jwt_public_key")
    @classmethod
    def _pem_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            # Set but empty (a deploy that failed to inject it) must not mean open mode.
            raise ValueError("is set but empty")
        # Environment files often carry a PEM on one line with escaped newlines.
        pem = value.replace("\\n", "\n").strip()
        load_public_key(pem)
        return pem

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for origin in value.split(","):
            if not re.fullmatch(r"https?://[^/\s*]+", origin.strip()):
                raise ValueError(
                    f"{origin.strip()!r} is not an origin like https://chat.example.com"
                )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_proxies(value)
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.idle_timeout and self.idle_timeout <= self.idle_after:
            raise ValueError("CHAT_IDLE_TIMEOUT must be 0 (never) or greater than CHAT_IDLE_AFTER")
        if self.jwt_secret and self.jwt_public_key:
            raise ValueError("set CHAT_JWT_SECRET or CHAT_JWT_PUBLIC_KEY, not both")
        if self.history_size >= self.send_queue:
            # A full recovery must fit in the send queue with room to spare.
            raise ValueError("CHAT_SEND_QUEUE must be greater than CHAT_HISTORY_SIZE")
        return self

    @property
    def auth_enabled(self) -> bool:
        """True when a JWT key is configured (either setting turns auth on)."""
        return bool(self.jwt_secret or self.jwt_public_key)

    @property
    def origins(self) -> frozenset[str] | None:
        """The allowed browser origins, lower-cased; None allows any."""
        if self.allowed_origins is None:
            return None
        return frozenset(o.strip().lower() for o in self.allowed_origins.split(",") if o.strip())

    @property
    def proxies(self) -> TrustedProxies:
        """The peers whose ``X-Forwarded-For``/``Forwarded`` are believed (parsed on each call)."""
        return parse_proxies(self.trusted_proxies or "")

    @property
    def supervisor_tick(self) -> float:
        """How often timers are checked: a quarter of the shortest timer, 50 ms to 1 s.

        Every timer (heartbeats, idle, cutting a peer that ignores a close) fires
        within one tick of its deadline.
        """
        timers = [
            self.heartbeat_interval,
            self.heartbeat_timeout,
            self.idle_after,
            self.drain_timeout,
        ]
        if self.idle_timeout:
            timers.append(self.idle_timeout)
        return min(1.0, max(0.05, min(timers) / 4))


def _read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines; blank lines and ``#`` comments are skipped."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            raise SettingsError(f"{path}:{number}: expected KEY=value, got {stripped!r}")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``CHAT_*`` variables of ``environ`` (default: the process's).

    When ``CHAT_ENV_FILE`` names a file, its ``CHAT_*`` lines are read first and
    the environment overrides them. Raises :class:`SettingsError` naming the
    first bad or unknown variable.
    """
    source = dict(os.environ if environ is None else environ)
    merged: dict[str, str] = {}
    env_file = source.pop(f"{PREFIX}ENV_FILE", None)
    if env_file:
        try:
            merged.update(_read_env_file(Path(env_file)))
        except (OSError, UnicodeDecodeError) as error:
            raise SettingsError(f"{PREFIX}ENV_FILE: cannot read {env_file}: {error}") from None
    merged.update(source)
    values: dict[str, Any] = {}
    for key, value in merged.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :].lower()
        if name not in Settings.model_fields:
            raise SettingsError(f"{key}: unknown setting (see the settings table in README.md)")
        values[name] = value
    try:
        return Settings(**values)
    except ValidationError as error:
        first = error.errors()[0]
        location = first["loc"]
        message = first["msg"].removeprefix("Value error, ")
        if location:
            message = f"{PREFIX}{str(location[0]).upper()}: {message}"
        raise SettingsError(message) from None
