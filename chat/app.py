"""The app factory: a FastAPI app around one :class:`~chat.node.Node`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.routing import Match, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from chat import __version__, api, endpoints, events, pages, spec, status
from chat.brokers import Broker
from chat.clock import Clock
from chat.forwarded import TrustedProxies, client_address
from chat.metrics import create_metrics
from chat.node import Node
from chat.settings import Settings
from chat.watch import Trend

log = logging.getLogger("chat")


class ChatApp(FastAPI):
    """FastAPI, with the chat WebSocket routes dispatched straight to their endpoints.

    Starlette's middleware stack and router stay on the stack of every
    WebSocket for its whole life: about fifteen coroutine frames and an exit
    stack, some 9 KiB per open connection, for nothing these endpoints use.
    While no middleware was added to the app, a ``websocket`` scope that
    matches one of the WebSocket routes of :data:`chat.endpoints.router`
    (included at the root) skips them; everything else (HTTP, other routes,
    any app with middleware or FastAPI's own telemetry on) goes the usual way.
    """

    direct: tuple[WebSocketRoute, ...] = tuple(
        r for r in endpoints.router.routes if isinstance(r, WebSocketRoute)
    )
    #: Peers whose forwarding headers are believed (``CHAT_TRUSTED_PROXIES``).
    proxies: TrustedProxies = TrustedProxies()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.proxies and scope["type"] in ("http", "websocket"):
            forward(scope, self.proxies)
        if scope["type"] == "websocket" and not self.user_middleware and not self._traced():
            for route in self.direct:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope["app"] = self
                    scope.update(child)
                    await route.endpoint(WebSocket(scope, receive, send))
                    return
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI schema: the server API only, which answers bad input 400, never 422."""
        if self.openapi_schema is None:
            self.openapi_schema = api.without_validation_errors(super().openapi())
        return self.openapi_schema

    def _traced(self) -> bool:
        """FastAPI's native telemetry (0.165+) is on: its spans wrap every connection."""
        telemetry = getattr(self, "_native_telemetry", None)
        return telemetry is not None and bool(telemetry.enabled())


def forward(scope: Scope, proxies: TrustedProxies) -> None:
    """Put the client's address in ``scope["client"]`` when a trusted proxy forwarded it.

    Only a peer in ``proxies`` is believed (:mod:`chat.forwarded`); the port
    is 0 unless the proxy gave one. The scope is changed in place, not
    copied as ASGI middleware would: Hypercorn logs the access from this
    same dict, so its access log shows the client too, and no middleware
    frame stays on the stack of every WebSocket for its life.
    """
    client = scope.get("client")
    if client is None or not proxies.trusts(client[0]):
        return
    found = client_address(scope["headers"], proxies)
    if found is not None:
        scope["client"] = found


def create_app(
    settings: Settings, *, clock: Clock | None = None, broker: Broker | None = None
) -> ChatApp:
    """Build the app: routes, status endpoints, and a lifespan that runs the node.

    ``clock`` and ``broker`` replace the real clock and the broker chosen by
    ``settings.broker_url`` (for tests and embedding). Under Hypercorn, also
    call :func:`chat.hypercorn_hooks.install` with ``app.state.node`` (as
    ``main.py`` does) for a clean shutdown. ``/metrics`` and ``/status`` cover
    every worker of the process group when prometheus-client runs in
    multiprocess mode (``main.py`` turns it on in Hypercorn's workers; see
    :mod:`chat.metrics`), else this process alone.
    """
    node = Node(settings, clock=clock, broker=broker)
    metrics = create_metrics(node)
    trend = Trend(events.TREND_SIZE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with node:
                node.spawn(metrics.run)
                node.spawn(events.run_sampler, node, trend)
                log.info(
                    "node %s ready: broker %s, %s",
                    settings.node_id,
                    node.broker.url,
                    node.auth.describe(),
                )
                yield
        finally:
            metrics.close()
        log.info("node %s stopped", settings.node_id)

    app = ChatApp(
        title="chat server API",
        version=__version__,
        summary="Publish, read history and presence, disconnect: admin only (docs/api.md).",
        lifespan=lifespan,
        # The schema documents the server API alone (every other route is left
        # out): the WebSocket protocol is docs/protocol.md, status docs/operations.md.
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.proxies = settings.proxies
    app.state.node = node
    app.state.metrics = metrics
    app.state.trend = trend
    app.include_router(endpoints.router, include_in_schema=False)
    app.include_router(status.router, include_in_schema=False)
    app.include_router(spec.router)
    app.include_router(events.router, include_in_schema=False)
    app.include_router(pages.router, include_in_schema=False)
    app.include_router(api.router)
    return app
