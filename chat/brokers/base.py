"""The broker interface. The values it carries are in :mod:`chat.envelope`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from anyio.abc import TaskStatus

from chat.envelope import Draft, Publication, Recovery

#: Called once per publication on every node subscribed to its room.
Deliver = Callable[[Publication], None]


class BrokerUnavailable(Exception):
    """The broker cannot publish now; the caller refuses the send (never drops it silently)."""


class Broker(Protocol):
    """Moves publications between the processes that share rooms.

    Guarantees: :meth:`publish` assigns the room's next ``seq`` (rising by
    exactly 1 per message, in publish order), keeps it in the room's history
    (``CHAT_HISTORY_SIZE`` messages for ``CHAT_HISTORY_TTL`` seconds) and
    returns only once the message is accepted, or raises
    :class:`BrokerUnavailable`; every node subscribed to the room then
    receives it through its ``deliver`` callback exactly once, in ``seq``
    order. Delivery to a node that is not subscribed is not promised (at most
    once): :meth:`recover` fills such gaps from the history.
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
        """Start delivering ``room`` to this node (called for its first local member).

        Returns only once deliveries are flowing: a message published after it
        returns reaches ``deliver``.
        """
        ...

    async def unsubscribe(self, room: str) -> None:
        """Stop delivering ``room`` to this node (called when its last local member leaves)."""
        ...

    async def recover(self, room: str, since: int | None, epoch: str | None = None) -> Recovery:
        """The room's latest ``seq`` and ``epoch``, and with ``since`` the kept messages
        after it (complete only if ``epoch``, when given, is still the room's).

        Called after :meth:`subscribe`, so that together with live delivery
        nothing published in between is lost (the caller drops duplicates by
        ``seq``).
        """
        ...
