"""The app Hypercorn serves: ``hypercorn main:app`` (or ``-c config/hypercorn.toml``).

Settings come from ``CHAT_*`` environment variables; a bad one stops the
server with a message naming it. In a worker of ``hypercorn -w N``, the
workers' metrics meet in one directory (:mod:`chat.workers`), so that
``/metrics`` and ``/status`` on any of them cover them all.
"""

from __future__ import annotations

import logging
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
from chat.settings import SettingsError, load_settings

try:
    settings = load_settings()
except SettingsError as error:
    print(f"chat: configuration error: {error}", file=sys.stderr)
    raise SystemExit(2) from None

# Our own handler on the "chat" logger only: Hypercorn configures its own loggers.
_handler = logging.StreamHandler()
_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
_log = logging.getLogger("chat")
_log.addHandler(_handler)
_log.setLevel(settings.log_level)
_log.propagate = False
app = create_app(settings)
hypercorn_hooks.install(app.state.node)  # on another Hypercorn version, it says why not
