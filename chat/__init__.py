"""chat: a real-time WebSocket messaging server for FastAPI and Hypercorn.

Layers, imports pointing down only:

1. Pure core, no I/O and no clock: :mod:`chat.settings`, :mod:`chat.errors`,
   :mod:`chat.protocol`, :mod:`chat.session`.
2. Async domain, anyio and no FastAPI: :mod:`chat.clock`, :mod:`chat.flusher`,
   :mod:`chat.registry`, :mod:`chat.rooms`, :mod:`chat.brokers`,
   :mod:`chat.connection`, :mod:`chat.supervisor`, :mod:`chat.node`.
3. Edge, the only code that knows FastAPI, ASGI and Hypercorn: :mod:`chat.app`,
   :mod:`chat.endpoints`, :mod:`chat.status`, :mod:`chat.metrics`,
   :mod:`chat.workers`, :mod:`chat.hypercorn_hooks`.
"""

from __future__ import annotations

__version__ = "0.1.0"
