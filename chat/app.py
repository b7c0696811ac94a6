"""The app factory: a FastAPI app around one :class:`~chat.node.Node`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from chat import __version__, endpoints, status
from chat.brokers import Broker
from chat.clock import Clock
from chat.metrics import Metrics
from chat.node import Node
from chat.settings import Settings

log = logging.getLogger("chat")


def create_app(
    settings: Settings, *, clock: Clock | None = None, broker: Broker | None = None
) -> FastAPI:
    """Build the app: routes, status endpoints, and a lifespan that runs the node.

    ``clock`` and ``broker`` replace the real clock and the broker chosen by
    ``settings.broker_url`` (for tests and embedding). Under Hypercorn, also
    call :func:`chat.hypercorn_hooks.install` with ``app.state.node`` (as
    ``main.py`` does) for a clean shutdown.
    """
    node = Node(settings, clock=clock, broker=broker)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with node:
            log.info(
                "node %s ready: broker %s, %s",
                settings.node_id,
                node.broker.url,
                f"JWT auth on ({node.auth.algorithm})"
                if node.auth.enabled
                else "open mode: no authentication, users name themselves with ?user=",
            )
            yield
        log.info("node %s stopped", settings.node_id)

    app = FastAPI(
        title="chat",
        version=__version__,
        lifespan=lifespan,
        # No generated API docs: nothing a chat client needs, one more open endpoint.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.node = node
    app.state.metrics = Metrics(node)
    app.include_router(endpoints.router)
    app.include_router(status.router)
    return app
