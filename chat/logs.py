"""How the server's logs come out: text lines, or one JSON object per line (``CHAT_LOG_FORMAT``).

In ``text`` mode (the default) chat's loggers write ``time LEVEL logger:
message`` lines and Hypercorn keeps its own format. In ``json`` mode every
line on stdout and stderr is one JSON object (:class:`JsonFormatter`):
chat's records, Hypercorn's access and error logs, and whatever another
library logs.

A record about a session carries its fields, passed with ``extra=`` by the
code that logs it (:meth:`chat.session.Session.log_fields`): the JSON object
has them as keys of their own, so a log pipeline can select by session,
user or room without parsing messages. Tokens are never among them.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

import orjson

from chat.settings import Settings

#: chat's text lines (the format the server always had).
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Fields a record about a session may carry (``extra=``), in the order written.
SESSION_FIELDS = (
    "session",
    "user",
    "room",
    "remote",
    "close_code",
    "close_reason",
    "closed_by",
)

#: Hypercorn's access log as fields: key in the JSON object, key of its atoms.
#: Never the query string (tokens travel in ``?token=``) nor a request header.
ACCESS_FIELDS = (
    ("remote", "h"),
    ("method", "m"),
    ("path", "U"),
    ("protocol", "H"),
    ("status", "s"),
    ("bytes", "b"),
    ("duration_us", "D"),
)

#: Hypercorn's loggers (config/hypercorn.toml gives both a handler).
HYPERCORN_LOGGERS = ("hypercorn.access", "hypercorn.error")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Always ``time`` (ISO 8601 UTC, milliseconds), ``level``, ``logger`` and
    ``message``; then the :data:`SESSION_FIELDS` the record carries (those
    not None); for Hypercorn's access log, :data:`ACCESS_FIELDS`; and
    ``exception`` with the traceback when there is one (its newlines escaped,
    so it stays one line).
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for name in SESSION_FIELDS:
            value = fields.get(name)
            if value is not None:
                entry[name] = value
        if record.name == "hypercorn.access" and isinstance(record.args, Mapping):
            for name, atom in ACCESS_FIELDS:
                entry[name] = _access_value(record.args[atom])
            if isinstance(entry["remote"], str):
                # Port 0: a proxy forwarded the address without one (chat.app.forward).
                entry["remote"] = entry["remote"].removesuffix(":0")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


def _utc(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def _access_value(value: object) -> object:
    """An access atom as JSON: numbers as numbers, Hypercorn's ``-`` as null."""
    if value == "-":
        return None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


class _Reformat(logging.Filter):
    """A logger's filter that gives every handler of its logger the JSON formatter.

    Hypercorn creates its loggers' handlers (and their text formatter) after
    the app is imported and started, so the formatter cannot be set from
    here beforehand; a logger's filters survive that, and see each record
    before the handlers do.
    """

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.formatter = formatter

    def filter(self, record: logging.LogRecord) -> bool:
        for handler in logging.getLogger(record.name).handlers:
            if handler.formatter is not self.formatter:
                handler.setFormatter(self.formatter)
        return True


class _NotHypercorns(logging.Filter):
    """Hypercorn's error log propagates to the root logger: print it once, with its own handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("hypercorn.")


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """Set up the process's logging for ``settings.log_format`` and ``settings.log_level``.

    chat's loggers write to ``stream`` (default stderr) at ``CHAT_LOG_LEVEL``,
    without propagating. In ``json`` mode the root logger writes JSON too
    (other libraries' records), and Hypercorn's handlers get the JSON
    formatter at their first record. Call once per process, at start-up.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    chat = logging.getLogger("chat")
    chat.addHandler(handler)
    chat.setLevel(settings.log_level)
    chat.propagate = False
    if settings.log_format == "text":
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
        return
    formatter = JsonFormatter()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    stray = logging.StreamHandler(stream if stream is not None else sys.stderr)
    stray.setFormatter(formatter)
    stray.addFilter(_NotHypercorns())
    root.addHandler(stray)
    # Python's warnings would otherwise be plain lines on stderr.
    logging.captureWarnings(True)
    for name in HYPERCORN_LOGGERS:
        logging.getLogger(name).addFilter(_Reformat(formatter))
