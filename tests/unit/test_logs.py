"""Log lines: text as always, or one JSON object per line with a session's fields (chat.logs)."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pytest
from hypercorn.config import Config
from hypercorn.logging import AccessLogAtoms, Logger

from chat.logs import SESSION_FIELDS, JsonFormatter, configure_logging
from chat.protocol import Subprotocol
from chat.session import Session, Timers
from tests.domain import make_settings

TOKEN = "eyJhbGciOiJIUzI1NiJ9.secret-token-value.signature"


def record(
    message: str = "hello %s",
    args: tuple[object, ...] = (),
    fields: Mapping[str, object] | None = None,
    exc_info: Any = None,
) -> logging.LogRecord:
    """A record as ``log.warning(message, *args, extra=fields)`` makes it."""
    made = logging.LogRecord("chat.session", logging.WARNING, __file__, 1, message, args, exc_info)
    made.__dict__.update(fields or {})
    return made


def formatted(made: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(made)
    assert "\n" not in line
    parsed: dict[str, Any] = orjson.loads(line)
    return parsed


def make_session() -> Session:
    return Session(
        id="abc123",
        user="ann",
        protocol=Subprotocol.JSON,
        remote="203.0.113.7",
        node="node-a",
        timers=Timers.of(make_settings()),
        now=0.0,
        host="203.0.113.7",
        room="lobby",
    )


def test_a_record_is_one_json_object_with_time_level_logger_and_message() -> None:
    made = record("hello %s", ("world",))
    made.created = 1764800000.25
    assert formatted(made) == {
        "time": "2025-12-03T22:13:20.250Z",
        "level": "WARNING",
        "logger": "chat.session",
        "message": "hello world",
    }


def test_a_live_sessions_fields_are_keys_of_their_own() -> None:
    entry = formatted(record(fields=make_session().log_fields()))
    assert {key: entry[key] for key in ("session", "user", "room", "remote")} == {
        "session": "abc123",
        "user": "ann",
        "room": "lobby",
        "remote": "203.0.113.7",
    }
    assert "close_reason" not in entry


def test_a_closed_session_adds_how_it_closed() -> None:
    session = make_session()
    session.accept(1.0)
    session.close(2.0, 4500, "idle_timeout", "server")
    entry = formatted(record(fields=session.log_fields()))
    assert (entry["close_code"], entry["close_reason"], entry["closed_by"]) == (
        4500,
        "idle_timeout",
        "server",
    )


def test_a_field_given_at_the_call_replaces_the_sessions() -> None:
    assert formatted(record(fields=make_session().log_fields(room="games")))["room"] == "games"


def test_session_fields_are_the_ones_the_formatter_writes() -> None:
    session = make_session()
    session.accept(1.0)
    session.close(2.0, 1000, "client_closed", "client")
    assert set(session.log_fields()) == set(SESSION_FIELDS)


def test_none_fields_are_left_out() -> None:
    session = Session(
        id="abc",
        user="bob",
        protocol=Subprotocol.TEXT,
        remote="unknown",
        node="n",
        timers=Timers.of(make_settings()),
        now=0.0,
    )
    assert "room" not in formatted(record(fields=session.log_fields()))


def test_an_exception_is_one_escaped_field() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        made = record("failed", exc_info=sys.exc_info())
    entry = formatted(made)
    assert entry["message"] == "failed"
    assert "RuntimeError: boom" in entry["exception"]


def access_record(query: bytes, client: tuple[str, int] = ("127.0.0.1", 5000)) -> logging.LogRecord:
    """A record of Hypercorn's access log, as hypercorn.logging.Logger.access makes it."""
    scope: dict[str, Any] = {
        "type": "websocket",
        "http_version": "1.1",
        "client": client,
        "path": "/ws/lobby",
        "query_string": query,
        "scheme": "ws",
        "headers": [(b"authorization", f"Bearer {TOKEN}".encode())],
    }
    atoms = AccessLogAtoms(scope, {"status": 101, "headers": []}, 0.0012)  # type: ignore[arg-type]
    return logging.LogRecord(
        "hypercorn.access", logging.INFO, __file__, 1, '%(h)s "%(r)s" %(s)s', (atoms,), None
    )


def test_hypercorns_access_log_has_its_fields_and_never_the_query_or_a_header() -> None:
    line = JsonFormatter().format(access_record(f"token={TOKEN}&user=ann".encode()))
    assert TOKEN not in line
    assert "secret-token-value" not in line
    entry = orjson.loads(line)
    assert {key: entry[key] for key in ("remote", "method", "path", "status", "bytes")} == {
        "remote": "127.0.0.1:5000",
        "method": "GET",
        "path": "/ws/lobby",
        "status": 101,
        "bytes": None,
    }
    assert entry["duration_us"] == 1200


def test_a_forwarded_client_without_a_port_shows_as_its_address() -> None:
    entry = formatted(access_record(b"", client=("203.0.113.7", 0)))
    assert entry["remote"] == "203.0.113.7"


@pytest.fixture
def clean_logging() -> Iterator[None]:
    """Put back every logger, handler and filter this test's configure_logging changes."""
    names = ["chat", "", "hypercorn.access", "hypercorn.error", "py.warnings"]
    saved = {
        name: (
            list(logging.getLogger(name).handlers),
            list(logging.getLogger(name).filters),
            logging.getLogger(name).level,
            logging.getLogger(name).propagate,
        )
        for name in names
    }
    yield
    logging.captureWarnings(False)
    for name, (handlers, filters, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers = handlers
        logger.filters = filters
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.usefixtures("clean_logging")
def test_text_mode_writes_chats_lines_as_it_always_did() -> None:
    out = io.StringIO()
    configure_logging(make_settings(log_format="text", log_level="INFO"), out)
    logging.getLogger("chat.node").info("ready", extra=make_session().log_fields())
    logging.getLogger("chat.node").debug("not at INFO")
    line = out.getvalue()
    assert line.count("\n") == 1
    assert " INFO chat.node: ready" in line


@pytest.mark.usefixtures("clean_logging")
def test_json_mode_turns_hypercorns_loggers_json_even_when_they_are_made_afterwards(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = io.StringIO()
    configure_logging(make_settings(log_format="json"), out)
    # Hypercorn builds its loggers (handlers, text formatter) after the app starts.
    config = Config()
    config.accesslog = "-"
    config.errorlog = "-"
    hypercorn_log = Logger(config)
    logging.getLogger("hypercorn.error").info("Running on http://127.0.0.1:8000")
    hypercorn_log.access_logger.info('%(h)s "%(r)s"', access_record(b"").args)  # type: ignore[union-attr]
    logging.getLogger("chat").warning("from chat")
    logging.getLogger("some.library").warning("from a library")
    captured = capsys.readouterr()
    lines = [*captured.out.splitlines(), *captured.err.splitlines(), *out.getvalue().splitlines()]
    entries = [orjson.loads(line) for line in lines]
    # Each once: Hypercorn's error log propagates to the root, and is not printed twice.
    assert sorted(entry["logger"] for entry in entries) == [
        "chat",
        "hypercorn.access",
        "hypercorn.error",
        "some.library",
    ]
