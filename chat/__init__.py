"""chat: a real-time WebSocket messaging server for FastAPI and Hypercorn.

Three layers, imports pointing down only (``docs/architecture.md``; the
import-linter contracts of ``pyproject.toml`` check them):

1. Pure core, no I/O and no clock: the session core (:mod:`chat.core`,
   :mod:`chat.dialogue`, :mod:`chat.replies`, :mod:`chat.membership`), its
   lifecycle (:mod:`chat.session`), the wire protocol, settings and errors.
2. Async domain, anyio and no FastAPI: :mod:`chat.node`, the driver
   :mod:`chat.connection` and :mod:`chat.writer`, :mod:`chat.flusher`,
   :mod:`chat.rooms`, :mod:`chat.registry`, :mod:`chat.supervisor`,
   :mod:`chat.brokers`.
3. Edge, the only code that knows FastAPI, ASGI and Hypercorn: :mod:`chat.app`,
   :mod:`chat.endpoints`, :mod:`chat.status`, :mod:`chat.spec`, :mod:`chat.metrics`,
   :mod:`chat.workers`, :mod:`chat.hypercorn_hooks`.
"""

from __future__ import annotations

__version__ = "0.1.0"
