"""Settings from ``CHAT_*`` variables (README.md, Settings), always from an injected environ."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from chat.settings import Settings, SettingsError, load_settings


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("broker_url", "memory://"),
        ("heartbeat_interval", 25.0),
        ("heartbeat_timeout", 10.0),
        ("idle_after", 60.0),
        ("idle_timeout", 600.0),
        ("closed_retention", 300.0),
        ("drain_timeout", 2.0),
        ("max_message_bytes", 65536),
        ("rate", 20.0),
        ("burst", 40),
        ("send_queue", 1000),
        ("max_sessions", 10_000),
        ("max_sessions_per_user", 10),
        ("max_sessions_per_ip", 0),
        ("max_rooms_per_session", 128),
        ("ws_compression", False),
        ("history_size", 100),
        ("history_ttl", 300.0),
        ("jwt_secret", None),
        ("jwt_public_key", None),
        ("jwt_audience", None),
        ("jwt_issuer", None),
        ("jwt_leeway", 30.0),
        ("allowed_origins", None),
        ("status_token", None),
    ],
)
def test_default(name: str, default: object) -> None:
    assert getattr(load_settings({}), name) == default


def test_default_node_id_is_hostname_and_pid() -> None:
    assert load_settings({}).node_id == f"{socket.gethostname()}-{os.getpid()}"


def test_auth_is_off_by_default() -> None:
    assert load_settings({}).auth_enabled is False


def public_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize("variable", ["CHAT_JWT_SECRET", "CHAT_JWT_PUBLIC_KEY"])
def test_either_jwt_key_turns_auth_on(variable: str) -> None:
    value = public_pem() if variable == "CHAT_JWT_PUBLIC_KEY" else "k" * 32
    assert load_settings({variable: value}).auth_enabled is True


def test_a_public_key_given_on_one_line_with_escaped_newlines_is_read() -> None:
    pem = public_pem()
    settings = load_settings({"CHAT_JWT_PUBLIC_KEY": pem.replace("\n", "\\n")})
    assert settings.jwt_public_key == pem.strip()


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"CHAT_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----garbage"}, "CHAT_JWT_PUBLIC_KEY"),
        ({"CHAT_ALLOWED_ORIGINS": "chat.example.com"}, "CHAT_ALLOWED_ORIGINS"),
        ({"CHAT_ALLOWED_ORIGINS": "https://a.example/path"}, "CHAT_ALLOWED_ORIGINS"),
    ],
)
def test_bad_auth_settings_are_refused_naming_them(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings(environ)


def test_both_jwt_keys_at_once_are_refused() -> None:
    with pytest.raises(SettingsError, match="not both"):
        load_settings({"CHAT_JWT_SECRET": "s" * 32, "CHAT_JWT_PUBLIC_KEY": public_pem()})


def test_allowed_origins_are_a_lower_cased_set() -> None:
    settings = load_settings({"CHAT_ALLOWED_ORIGINS": "https://Chat.Example.com, http://x:8080"})
    assert settings.origins == frozenset({"https://chat.example.com", "http://x:8080"})
    assert load_settings({}).origins is None


@pytest.mark.parametrize(
    ("variable", "raw", "name", "expected"),
    [
        ("CHAT_BROKER_URL", "memory://", "broker_url", "memory://"),
        ("CHAT_NODE_ID", "node-a", "node_id", "node-a"),
        ("CHAT_HEARTBEAT_INTERVAL", "5", "heartbeat_interval", 5.0),
        ("CHAT_HEARTBEAT_INTERVAL", "0.5", "heartbeat_interval", 0.5),
        ("CHAT_HEARTBEAT_TIMEOUT", "3", "heartbeat_timeout", 3.0),
        ("CHAT_IDLE_AFTER", "30", "idle_after", 30.0),
        ("CHAT_IDLE_TIMEOUT", "90", "idle_timeout", 90.0),
        ("CHAT_IDLE_TIMEOUT", "0", "idle_timeout", 0.0),
        ("CHAT_CLOSED_RETENTION", "0", "closed_retention", 0.0),
        ("CHAT_DRAIN_TIMEOUT", "5", "drain_timeout", 5.0),
        ("CHAT_MAX_MESSAGE_BYTES", "1024", "max_message_bytes", 1024),
        ("CHAT_RATE", "2.5", "rate", 2.5),
        ("CHAT_BURST", "5", "burst", 5),
        ("CHAT_SEND_QUEUE", "500", "send_queue", 500),
        ("CHAT_MAX_SESSIONS", "3", "max_sessions", 3),
        ("CHAT_MAX_SESSIONS_PER_USER", "2", "max_sessions_per_user", 2),
        ("CHAT_MAX_SESSIONS_PER_IP", "4", "max_sessions_per_ip", 4),
        ("CHAT_MAX_ROOMS_PER_SESSION", "1", "max_rooms_per_session", 1),
        ("CHAT_WS_COMPRESSION", "true", "ws_compression", True),
        ("CHAT_WS_COMPRESSION", "false", "ws_compression", False),
        ("CHAT_HISTORY_SIZE", "0", "history_size", 0),
        ("CHAT_HISTORY_TTL", "60", "history_ttl", 60.0),
        ("CHAT_SEND_ID_WINDOW", "0", "send_id_window", 0.0),
        ("CHAT_JWT_SECRET", "hs256-secret-" + "x" * 32, "jwt_secret", "hs256-secret-" + "x" * 32),
        ("CHAT_JWT_AUDIENCE", "chat", "jwt_audience", "chat"),
        ("CHAT_JWT_ISSUER", "https://issuer", "jwt_issuer", "https://issuer"),
        ("CHAT_JWT_LEEWAY", "0", "jwt_leeway", 0.0),
        ("CHAT_ALLOWED_ORIGINS", "https://a,https://b", "allowed_origins", "https://a,https://b"),
        ("CHAT_STATUS_TOKEN", "status-token-0123456", "status_token", "status-token-0123456"),
    ],
)
def test_chat_variable_is_parsed(variable: str, raw: str, name: str, expected: object) -> None:
    assert getattr(load_settings({variable: raw}), name) == expected


def test_unknown_chat_variable_is_rejected_by_name() -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings({"CHAT_HEARTBEAT_INTERVALL": "5"})
    assert "CHAT_HEARTBEAT_INTERVALL" in str(excinfo.value)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("CHAT_HEARTBEAT_INTERVAL", "abc"),
        ("CHAT_HEARTBEAT_INTERVAL", "-1"),
        ("CHAT_HEARTBEAT_INTERVAL", "0"),
        ("CHAT_HEARTBEAT_INTERVAL", ""),
        ("CHAT_HEARTBEAT_TIMEOUT", "0"),
        ("CHAT_IDLE_AFTER", "0"),
        ("CHAT_IDLE_TIMEOUT", "-1"),
        ("CHAT_CLOSED_RETENTION", "-1"),
        ("CHAT_DRAIN_TIMEOUT", "0"),
        ("CHAT_DRAIN_TIMEOUT", "61"),
        ("CHAT_MAX_MESSAGE_BYTES", "big"),
        ("CHAT_MAX_MESSAGE_BYTES", "1.5"),
        ("CHAT_MAX_MESSAGE_BYTES", "63"),
        ("CHAT_RATE", "0"),
        ("CHAT_BURST", "0"),
        ("CHAT_SEND_QUEUE", "0"),
        ("CHAT_MAX_SESSIONS", "0"),
        ("CHAT_MAX_SESSIONS_PER_USER", "-1"),
        ("CHAT_MAX_SESSIONS_PER_IP", "-1"),
        ("CHAT_MAX_ROOMS_PER_SESSION", "0"),
        ("CHAT_WS_COMPRESSION", "maybe"),
        ("CHAT_HISTORY_SIZE", "-1"),
        ("CHAT_HISTORY_TTL", "-1"),
        ("CHAT_SEND_ID_WINDOW", "-1"),
        ("CHAT_JWT_LEEWAY", "-1"),
        ("CHAT_BROKER_URL", "http://x"),
        ("CHAT_BROKER_URL", "localhost:6379"),
        ("CHAT_BROKER_URL", ""),
        ("CHAT_NODE_ID", ""),
        ("CHAT_NODE_ID", "n" * 129),
        ("CHAT_LOG_LEVEL", "TRACE"),
        ("CHAT_LOG_FORMAT", "xml"),
        ("CHAT_TRUSTED_PROXIES", "nginx"),
        ("CHAT_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/33"),
        ("CHAT_TRUSTED_PROXIES", "10.0.0.1/8"),
    ],
)
def test_bad_value_is_rejected_naming_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings({variable: raw})
    assert variable in str(excinfo.value)


@pytest.mark.parametrize(
    "environ",
    [
        {"CHAT_IDLE_AFTER": "60", "CHAT_IDLE_TIMEOUT": "60"},
        {"CHAT_IDLE_AFTER": "60", "CHAT_IDLE_TIMEOUT": "30"},
        {"CHAT_IDLE_TIMEOUT": "60"},
        {"CHAT_IDLE_AFTER": "700"},
    ],
)
def test_idle_timeout_not_after_idle_after_is_rejected(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings(environ)
    assert "CHAT_IDLE_TIMEOUT" in str(excinfo.value)


def test_idle_timeout_zero_means_never_whatever_idle_after_is() -> None:
    settings = load_settings({"CHAT_IDLE_AFTER": "7200", "CHAT_IDLE_TIMEOUT": "0"})
    assert settings.idle_timeout == 0.0
    assert settings.idle_after == 7200.0


def test_variables_without_the_chat_prefix_are_ignored() -> None:
    settings = load_settings(
        {"PATH": "/usr/bin", "HEARTBEAT_INTERVAL": "abc", "CHATTY": "1", "XCHAT_RATE": "0"}
    )
    assert settings == load_settings({})


def test_load_settings_reads_only_the_given_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_HEARTBEAT_INTERVAL", "abc")
    monkeypatch.setenv("CHAT_NOT_A_SETTING", "1")
    assert load_settings({}).heartbeat_interval == 25.0


# -- CHAT_ENV_FILE ------------------------------------------------------------------


def test_env_file_values_are_read(tmp_path: Path) -> None:
    env_file = tmp_path / "chat.env"
    env_file.write_text(
        "# a comment\n"
        "\n"
        "CHAT_HEARTBEAT_INTERVAL=5\n"
        "  CHAT_NODE_ID = 'node-from-file'  \n"
        'CHAT_LOG_LEVEL="DEBUG"\n'
    )
    settings = load_settings({"CHAT_ENV_FILE": str(env_file)})
    assert settings.heartbeat_interval == 5.0
    assert settings.node_id == "node-from-file"
    assert settings.log_level == "DEBUG"


def test_environment_overrides_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "chat.env"
    env_file.write_text("CHAT_HEARTBEAT_INTERVAL=5\nCHAT_HEARTBEAT_TIMEOUT=3\n")
    settings = load_settings({"CHAT_ENV_FILE": str(env_file), "CHAT_HEARTBEAT_INTERVAL": "7"})
    assert settings.heartbeat_interval == 7.0
    assert settings.heartbeat_timeout == 3.0


def test_env_file_lines_without_the_chat_prefix_are_ignored(tmp_path: Path) -> None:
    env_file = tmp_path / "chat.env"
    env_file.write_text("OTHER_SETTING=1\nHEARTBEAT_INTERVAL=abc\n")
    assert load_settings({"CHAT_ENV_FILE": str(env_file)}) == load_settings({})


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        # An unknown CHAT_ variable is rejected by name.
        pytest.param(b"CHAT_BOGUS=1\n", "CHAT_BOGUS", id="unknown-variable"),
        # A bad value is rejected naming the variable.
        pytest.param(b"CHAT_SEND_QUEUE=lots\n", "CHAT_SEND_QUEUE", id="bad-value"),
        # A malformed line is rejected naming the file and the line.
        pytest.param(b"CHAT_RATE=5\nCHAT_BURST 10\n", "{path}:2", id="malformed-line"),
        # A missing file is rejected naming the variable.
        pytest.param(None, "CHAT_ENV_FILE", id="missing-file"),
        # A file that is not UTF-8 is rejected naming the variable.
        pytest.param(b"CHAT_NODE_ID=n\xff\n", "CHAT_ENV_FILE", id="not-utf8"),
    ],
)
def test_a_bad_env_file_is_rejected_saying_what_is_wrong(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    env_file = tmp_path / "chat.env"
    if content is not None:
        env_file.write_bytes(content)
    with pytest.raises(SettingsError) as excinfo:
        load_settings({"CHAT_ENV_FILE": str(env_file)})
    assert expected.format(path=env_file) in str(excinfo.value)


# -- secrets, immutability, derived values -------------------------------------------

SECRETS = [
    ("CHAT_JWT_SECRET", "hs256-Sup3rSecret-long-enough-for-hs256"),
    ("CHAT_STATUS_TOKEN", "status-Sup3rSecret"),
]


@pytest.mark.parametrize(("variable", "secret"), SECRETS)
def test_secret_never_appears_in_repr_or_str(variable: str, secret: str) -> None:
    settings = load_settings({variable: secret})
    assert "Sup3rSecret" not in repr(settings)
    assert "Sup3rSecret" not in str(settings)


@pytest.mark.parametrize(
    "url",
    [
        "http://user:Sup3rSecret@cache",
        "kafka://user:Sup3rSecret@cache:9092",
        "user:Sup3rSecret@cache",
        "redis://user:Sup3rSecret@cache:63790000/0",
        "rediss://:Sup3rSecret@cache:port/0",
    ],
)
def test_a_refused_broker_url_is_named_but_never_shown(url: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings({"CHAT_BROKER_URL": url})
    assert "CHAT_BROKER_URL" in str(excinfo.value)
    assert "Sup3rSecret" not in str(excinfo.value)


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(ValidationError):
        settings.heartbeat_interval = 1.0
    assert settings.heartbeat_interval == 25.0


def test_settings_reject_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        Settings(heartbeat_intervall=5.0)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("environ", "tick"),
    [
        ({}, 0.5),
        ({"CHAT_DRAIN_TIMEOUT": "10"}, 1.0),
        (
            {
                "CHAT_HEARTBEAT_INTERVAL": "2",
                "CHAT_HEARTBEAT_TIMEOUT": "1",
                "CHAT_IDLE_AFTER": "3",
                "CHAT_IDLE_TIMEOUT": "4",
            },
            0.25,
        ),
        ({"CHAT_HEARTBEAT_TIMEOUT": "0.1"}, 0.05),
        ({"CHAT_HEARTBEAT_INTERVAL": "0.01"}, 0.05),
        (
            {
                "CHAT_HEARTBEAT_INTERVAL": "2",
                "CHAT_HEARTBEAT_TIMEOUT": "2",
                "CHAT_IDLE_AFTER": "2",
                "CHAT_IDLE_TIMEOUT": "0",
            },
            0.5,
        ),
    ],
    ids=[
        "defaults-quarter-of-drain-timeout",
        "capped-at-1s",
        "quarter-of-shortest",
        "floor-50ms",
        "floor-50ms-interval",
        "idle-timeout-0-ignored",
    ],
)
def test_supervisor_tick(environ: dict[str, str], tick: float) -> None:
    assert load_settings(environ).supervisor_tick == pytest.approx(tick)


@pytest.mark.parametrize(("history", "queue"), [("100", "100"), ("2000", "1000")])
def test_a_send_queue_that_cannot_hold_a_full_recovery_is_refused(history: str, queue: str) -> None:
    with pytest.raises(
        SettingsError, match="CHAT_SEND_QUEUE must be greater than CHAT_HISTORY_SIZE"
    ):
        load_settings({"CHAT_HISTORY_SIZE": history, "CHAT_SEND_QUEUE": queue})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CHAT_STATUS_TOKEN", "short"),
        ("CHAT_JWT_PUBLIC_KEY", "   "),
        ("CHAT_ALLOWED_ORIGINS", "https://*.example.com"),
    ],
)
def test_weak_or_empty_security_settings_are_refused(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})


def test_a_redis_url_is_accepted_and_never_shown() -> None:
    settings = load_settings({"CHAT_BROKER_URL": "redis://user:Sup3rSecret@cache:6379/0"})
    assert settings.broker_url.startswith("redis://")
    assert "Sup3rSecret" not in repr(settings)


def test_trusted_proxies_default_to_nobody_and_take_addresses_and_networks() -> None:
    assert not load_settings({}).proxies
    proxies = load_settings({"CHAT_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8, ::1"}).proxies
    assert [proxies.trusts(host) for host in ("127.0.0.1", "10.1.1.1", "::1", "192.0.2.1")] == [
        True,
        True,
        True,
        False,
    ]
    assert not load_settings({"CHAT_TRUSTED_PROXIES": " "}).proxies


def test_a_bad_trusted_proxy_is_named_in_the_error() -> None:
    with pytest.raises(SettingsError, match=r"^CHAT_TRUSTED_PROXIES: 'nginx' is not an IP"):
        load_settings({"CHAT_TRUSTED_PROXIES": "127.0.0.1,nginx"})


def test_log_format_is_text_by_default() -> None:
    assert load_settings({}).log_format == "text"
    assert load_settings({"CHAT_LOG_FORMAT": "json"}).log_format == "json"
