"""The broker interface and the values it carries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from anyio.abc import TaskStatus

from chat.protocol import FrameId


@dataclass(frozen=True, slots=True)
class Draft:
    """A message a session wants published; the broker gives it a ``seq``."""

    room: str
    user: str
    text: str
    id: FrameId
    ts: float


@dataclass(frozen=True, slots=True)
class Publication:
    """A published message: a :class:`Draft` with its room ``seq``."""

    room: str
    seq: int
    user: str
    text: str
    id: FrameId
    ts: float


#: Called once per publication on every node subscribed to its room.
Deliver = Callable[[Publication], None]


class BrokerUnavailable(Exception):
    """The broker cannot publish now; the caller refuses the send (never drops it silently)."""


class Broker(Protocol):
    """Moves publications between the processes that share rooms.

    Guarantees: :meth:`publish` assigns the room's next ``seq`` (rising by
    exactly 1 per message, in publish order) and returns only once the message
    is accepted, or raises :class:`BrokerUnavailable`; every node subscribed to
    the room then receives it through its ``deliver`` callback exactly once,
    in ``seq`` order. Delivery to a node that is not subscribed is not
    promised (at most once).
    """

    @property
    def url(self) -> str:
        """The broker URL with any credentials masked."""
        ...

    @property
    def healthy(self) -> bool:
        """True while publishing and delivery work end to end."""
        ...

    async def run(self, deliver: Deliver, *, task_status: TaskStatus[None]) -> None:
        """Hand publications to ``deliver`` until cancelled; ``task_status`` when ready."""
        ...

    async def publish(self, draft: Draft) -> Publication:
        """Publish ``draft`` to its room; raises :class:`BrokerUnavailable`."""
        ...

    async def subscribe(self, room: str) -> None:
        """Start delivering ``room`` to this node (called for its first local member)."""
        ...

    async def unsubscribe(self, room: str) -> None:
        """Stop delivering ``room`` to this node (called when its last local member leaves)."""
        ...

    async def latest_seq(self, room: str) -> int:
        """The last ``seq`` published in ``room`` (0 if none)."""
        ...
