"""A node on a fake clock with fake transports, for the domain's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

from chat.brokers import Broker
from chat.node import Node
from chat.session import Session, SessionState
from chat.settings import Settings
from chat.transport import Endpoint, Handshake
from tests.clock import FakeClock, settle
from tests.fakes import FakeTransport


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "node_id": "node-a",
        "heartbeat_interval": 25.0,
        "heartbeat_timeout": 10.0,
        "idle_after": 60.0,
        "idle_timeout": 600.0,
        "drain_timeout": 2.0,
        "closed_retention": 300.0,
        # Generous limits: tests of other behaviour send bursts on a stopped clock.
        "rate": 1000.0,
        "burst": 1000,
    }
    values.update(overrides)
    return Settings(**values)


def state(session: Session) -> SessionState:
    """The session's state now (a call, so that type narrowing does not stick)."""
    return session.state


def flag(event: anyio.Event) -> bool:
    return event.is_set()


@dataclass
class Harness:
    node: Node
    clock: FakeClock
    group: TaskGroup

    async def connect(
        self,
        room: str | None = "lobby",
        *,
        protocol: str | None = "chat.v1",
        user: str | None = None,
        since: int | None = None,
        token: str | None = None,
        origin: str | None = None,
        host: str = "127.0.0.1",
        endpoint: Endpoint = Endpoint.ROOM,
        transport: FakeTransport | None = None,
    ) -> tuple[FakeTransport, Session]:
        transport = transport or FakeTransport()
        # Every session known before, live or closed: the new one is the only other.
        before = {session.id for session, _ in self.node.registry.sessions()}
        handshake = Handshake(
            endpoint=endpoint,
            remote="127.0.0.1:5000",
            room=room,
            subprotocols=(protocol,) if protocol else (),
            user=user,
            since=since,
            token=token,
            origin=origin,
            host=host,
        )
        self.group.start_soon(self.node.handle, handshake, transport)
        await settle()
        new = [session for session, _ in self.node.registry.sessions() if session.id not in before]
        assert len(new) == 1, f"expected exactly one new session, got {[s.id for s in new]}"
        return transport, new[0]

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds)


@asynccontextmanager
async def running(
    broker: Broker | None = None, clock: FakeClock | None = None, **overrides: Any
) -> AsyncIterator[Harness]:
    clock = clock or FakeClock()
    node = Node(make_settings(**overrides), clock=clock, broker=broker)
    with anyio.fail_after(30):
        async with node, anyio.create_task_group() as group:
            yield Harness(node, clock, group)
            group.cancel_scope.cancel()
