"""Every private name of Hypercorn 0.18.0 (and wsproto 1.3) that chat's hooks rely on.

Each entry says where the name lives, which hook uses it, and the parameters
that hook's replacement assumes. :func:`missing` checks them all before
anything is patched (a Hypercorn that moved one is left alone, with a
warning), and ``tests/unit/test_hypercorn_names.py`` turns each entry into a
contract test that names what moved.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PrivateName:
    """``module.name`` (``name`` may be dotted: ``Class.method``), used by ``hook``."""

    module: str
    name: str
    #: The module of :mod:`chat.hypercorn_hooks` that relies on it.
    hook: str
    #: The parameters a callable must take, as the hook calls or replaces it.
    parameters: tuple[str, ...] | None = None

    def resolve(self) -> Any:
        """The object; raises :class:`LookupError` saying what moved."""
        try:
            found: Any = importlib.import_module(self.module)
            for part in self.name.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError):
            raise LookupError(f"{self.module}.{self.name} is gone (used by {self.hook})") from None
        if self.parameters is not None:
            taken = tuple(inspect.signature(found).parameters)
            if taken != self.parameters:
                raise LookupError(
                    f"{self.module}.{self.name} takes {taken}, not {self.parameters}"
                    f" (used by {self.hook})"
                )
        return found


_RUN = "hypercorn.asyncio.run"
_TCP = "hypercorn.asyncio.tcp_server"
_WS = "hypercorn.protocol.ws_stream"
_TASKS = "hypercorn.asyncio.task_group"

PRIVATE_NAMES: tuple[PrivateName, ...] = (
    # shutdown: the worker's shutdown trigger, looked up at call time by worker_serve.
    PrivateName(_RUN, "raise_shutdown", "shutdown", ("shutdown_event",)),
    PrivateName(_RUN, "worker_serve", "shutdown"),
    # handle: each connection's writer, read when its TCPServer runs.
    PrivateName(_TCP, "TCPServer.run", "handle", ("self",)),
    PrivateName(
        _TCP,
        "TCPServer.__init__",
        "handle",
        ("self", "app", "loop", "config", "context", "state", "reader", "writer"),
    ),
    # websocket: the names ws_stream uses for wsproto's classes and its own buffer.
    PrivateName(_WS, "PerMessageDeflate", "websocket"),
    PrivateName(_WS, "WebsocketBuffer", "websocket", ("max_length",)),
    PrivateName(_WS, "Connection", "websocket"),
    PrivateName(_WS, "WSStream._send_pings", "websocket", ("self",)),
    PrivateName("wsproto.extensions", "PerMessageDeflate.frame_inbound_payload_data", "websocket"),
    PrivateName("wsproto.extensions", "PerMessageDeflate.frame_inbound_complete", "websocket"),
    # http2: the settings Hypercorn's HTTP/2 connections advertise.
    PrivateName("hypercorn.protocol.h2", "H2Protocol.__init__", "http2"),
    # lean: each stream's app queue and each protocol's events.
    PrivateName(_TASKS, "_handle", "lean"),
    PrivateName(_TASKS, "TaskGroup.spawn_app", "lean", ("self", "app", "config", "scope", "send")),
    PrivateName(_TASKS, "TaskGroup.spawn", "lean", ("self", "func", "args")),
    PrivateName("hypercorn.asyncio.worker_context", "WorkerContext.event_class", "lean"),
)


def missing() -> list[str]:
    """What moved, one line each; empty when every name is where the hooks expect it."""
    found = []
    for name in PRIVATE_NAMES:
        try:
            name.resolve()
        except LookupError as error:
            found.append(str(error))
    return found
