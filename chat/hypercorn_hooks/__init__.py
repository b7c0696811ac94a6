"""Everything chat does to Hypercorn 0.18.0's internals, in one quarantined package.

Hypercorn gives an app no public hook that runs before it drops connections,
always negotiates permessage-deflate and inflates without a cap, never tells
the app the peer's close code or lets it drop a peer that stopped reading,
and serves WebSockets over HTTP/2 where a stuck one cannot be cut.
:func:`install` fixes these by replacing private names of Hypercorn 0.18.0
(pinned in ``pyproject.toml``), each listed in :mod:`.names` with the hook
that uses it; ``tests/unit/test_hypercorn_names.py`` fails, naming it, when a
Hypercorn release moves one, and :func:`install` then leaves Hypercorn
alone. Each patch keeps its place by a measured benefit, stated in its
module's docstring:

- :mod:`.shutdown`: drain before Hypercorn drops connections (``bye``, 1001).
- :mod:`.handle`: each connection's handle: abort, the peer's close code,
  and the direct write path. The same frames through Hypercorn's ASGI send
  path cost the server 24.5 against 4.75 µs per delivery in
  ``fanout-text-1x100`` and 8.55 against 4.2 in ``fanout-batch-1x100``
  (``python -m bench ... --pairs 1``, both ways alternately, medians of
  three runs each, 2026-12-03).
- :mod:`.websocket`: permessage-deflate only when configured and capped;
  oversized and binary messages cut as they arrive; the first ping one
  interval after the connection opened.
- :mod:`.http2`: no WebSockets over HTTP/2.
- :mod:`.lean`: lighter per-connection primitives: 3.9 KiB less per idle
  connection (24.8 against 28.7 KiB in ``idle-text``, 25.5 against 29.4 in
  ``idle-json``: ``python -m bench idle-text idle-json --idle 1000``, two
  runs each way).

Only the asyncio and uvloop workers are covered (not trio).
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from chat.hypercorn_hooks.handle import ConnectionHandle, current_connection, text_frame

if TYPE_CHECKING:
    from chat.node import Node

log = logging.getLogger("chat.hypercorn")

#: The only Hypercorn release whose private names the hooks were checked against.
SUPPORTED_HYPERCORN = "0.18.0"


class _Installed:
    done = False


def install(node: Node) -> bool:
    """Hook this process's Hypercorn to ``node`` (idempotent); True when Hypercorn is hooked.

    Call it at import of the module Hypercorn loads (``main.py``): Hypercorn
    imports the app in each worker before it starts serving. On another
    Hypercorn release, or one that moved a name the hooks use, it logs why
    and changes nothing.
    """
    if _Installed.done:
        return True
    try:
        found = version("hypercorn")
    except PackageNotFoundError:  # pragma: no cover - hypercorn is a dependency
        return False
    if found != SUPPORTED_HYPERCORN:
        log.warning(
            "Hypercorn %s is not %s: clean shutdown and connection hooks are off",
            found,
            SUPPORTED_HYPERCORN,
        )
        return False
    from chat.hypercorn_hooks.names import missing

    moved = missing()
    if moved:
        log.warning("Hypercorn's internals moved (%s): the hooks are off", "; ".join(moved))
        return False
    from chat.hypercorn_hooks.handle import patch_tcp_server
    from chat.hypercorn_hooks.http2 import patch_http2
    from chat.hypercorn_hooks.lean import patch_lean
    from chat.hypercorn_hooks.shutdown import patch_shutdown
    from chat.hypercorn_hooks.websocket import patch_websocket

    settings = node.settings
    patch_shutdown(node)
    patch_tcp_server()
    patch_websocket(settings.ws_compression, settings.max_message_bytes)
    patch_http2()
    patch_lean()
    _Installed.done = True
    return True


__all__ = ["SUPPORTED_HYPERCORN", "ConnectionHandle", "current_connection", "install", "text_frame"]
