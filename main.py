"""The app Hypercorn serves: ``hypercorn main:app`` (or ``-c config/hypercorn.toml``).

Settings come from ``CHAT_*`` environment variables; a bad one stops the
server with a message naming it. In a worker of ``hypercorn -w N``, the
workers' metrics meet in one directory (:mod:`chat.workers`), so that
``/metrics`` and ``/status`` on any of them cover them all.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from chat import workers

# Before anything imports prometheus_client: it picks multiprocess mode once, at import.
try:
    workers.prepare_metrics_dir(
        os.environ, parent=workers.parent_pid(), tmp=Path(tempfile.gettempdir())
    )
except OSError as error:
    print(f"chat: metrics directory: {error}", file=sys.stderr)
    raise SystemExit(2) from None

from chat import hypercorn_hooks
from chat.app import create_app
from chat.logs import configure_logging
from chat.settings import SettingsError, load_settings

try:
    settings = load_settings()
except SettingsError as error:
    print(f"chat: configuration error: {error}", file=sys.stderr)
    raise SystemExit(2) from None

# Text or JSON lines (CHAT_LOG_FORMAT); Hypercorn's own loggers too in JSON mode.
configure_logging(settings)
app = create_app(settings)
hypercorn_hooks.install(app.state.node)  # on another Hypercorn version, it says why not
