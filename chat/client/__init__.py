"""``chat.client``: a Python client that keeps a ``chat.v1`` session alive for days.

::

    import anyio
    from chat.client import Client, Message

    async def main() -> None:
        async with Client("ws://127.0.0.1:8000/ws/lobby", user="alice") as client:
            await client.send("lobby", "hello")
            async for event in client:
                if isinstance(event, Message):
                    print(event.user, event.text)

    anyio.run(main)

It answers pings, notices a dead server, reconnects with backoff and full
jitter by the contract's close-code table, recovers every room with
``since``/``epoch`` (each message once, in ``seq`` order), retries sends with
the same ``id`` and refreshes tokens. ``docs/client.md`` is its guide.

Layers (import-linter contract in ``pyproject.toml``): :mod:`chat.client.cli`
over the anyio driver :mod:`chat.client.driver` over the pure core
(:mod:`chat.client.core`, :mod:`chat.client.policy`, :mod:`chat.client.rooms`,
:mod:`chat.client.sends`, :mod:`chat.client.tokens`, :mod:`chat.client.events`).
It imports nothing of the server.
"""

from __future__ import annotations

from chat.client.core import ClientConfig
from chat.client.driver import Client
from chat.client.events import (
    Ack,
    ClientClosed,
    ClientError,
    ConnectionState,
    Event,
    Joined,
    Left,
    Message,
    OutboxFull,
    PresenceEvent,
    RoomUnrecoverable,
    SendFailed,
    ServerError,
    StateChanged,
)

__all__ = [
    "Ack",
    "Client",
    "ClientClosed",
    "ClientConfig",
    "ClientError",
    "ConnectionState",
    "Event",
    "Joined",
    "Left",
    "Message",
    "OutboxFull",
    "PresenceEvent",
    "RoomUnrecoverable",
    "SendFailed",
    "ServerError",
    "StateChanged",
]
