"""The broker interface. The values it carries are in :mod:`chat.envelope`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from anyio.abc import TaskStatus

from chat.envelope import (
    DisconnectCommand,
    Draft,
    HistoryPage,
    NodeInfo,
    PresenceChange,
    Publication,
    Recovery,
    RunStarted,
    Tally,
)

#: Called once per publication (and presence change, and new run of a room's
#: ``seq``) on every node subscribed to its room.
Deliver = Callable[[Publication | PresenceChange | RunStarted], None]
#: How many sessions this node holds now (for the cluster view).
SessionCount = Callable[[], int]
#: Applies a command from any node to this node (its sessions); returns how many
#: sessions it closed. Called on the event loop; never waits.
Apply = Callable[[DisconnectCommand], int]


def discount(counter: Counter[Any], key: Any) -> None:
    """One less of ``key`` in ``counter``, which forgets keys that reach zero."""
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


class BrokerUnavailable(Exception):
    """The broker cannot do it now; the caller refuses the request (never drops it silently).

    ``uncertain`` is True when the request reached the broker but no answer
    came in time: it may still take effect (a publish, once: see
    :mod:`chat.idempotency`). False means it was refused before doing anything.
    """

    def __init__(self, detail: str, *, uncertain: bool = False) -> None:
        super().__init__(detail)
        self.uncertain = uncertain


class Bus(Protocol):
    """Publications between the processes sharing rooms.

    Guarantees: :meth:`publish` assigns the room's next ``seq`` (rising by
    exactly 1 per message, in publish order), keeps it in the room's history
    (``CHAT_HISTORY_SIZE`` messages for ``CHAT_HISTORY_TTL`` seconds) and
    returns only once the message is accepted, or raises
    :class:`BrokerUnavailable`. A draft with an ``id`` that retries one
    published within ``CHAT_SEND_ID_WINDOW`` (same user, room, ``id`` and
    text, on any node) is not published again: :meth:`publish` returns the
    original ``seq`` marked ``duplicate``. Every node subscribed to the room then
    receives it through its ``deliver`` callback exactly once, in ``seq``
    order; the first publication of a new run of the room comes after a
    :class:`~chat.envelope.RunStarted` for it. Delivery to a node that is not
    subscribed is not promised (at most once): :meth:`History.recover` fills
    such gaps from the history. Every method may raise
    :class:`BrokerUnavailable`, within about a second, never later.
    """

    async def run(
        self,
        deliver: Deliver,
        sessions: SessionCount,
        *,
        task_status: TaskStatus[None],
        apply: Apply | None = None,
    ) -> None:
        """Deliver to ``deliver`` (and commands of :class:`Control` to ``apply``) until
        cancelled; signal ``task_status`` at once, even if the broker is not reachable
        yet (the node then serves as unready)."""
        ...

    async def publish(self, draft: Draft) -> Publication:
        """Publish ``draft`` to its room."""
        ...

    async def publish_many(self, drafts: Sequence[Draft]) -> list[Publication | BrokerUnavailable]:
        """Publish ``drafts`` in this order, as :meth:`publish` of each in turn would,
        in one round trip where the broker can: each draft's publication, or the
        :class:`BrokerUnavailable` that refused it (the others go on regardless, as
        they would one by one). A driver that has several sends waiting uses it.
        """
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


class History(Protocol):
    """Each room's run, latest ``seq`` and recent messages."""

    async def recover(self, room: str, since: int | None, epoch: str | None = None) -> Recovery:
        """The room's latest ``seq`` and ``epoch`` (a room without a run starts one),
        and with ``since`` the kept messages after it (complete only if ``epoch``,
        when given, is still the room's).

        Called after :meth:`Bus.subscribe`, so that together with live delivery
        nothing published in between is lost (the caller drops duplicates by
        ``seq``). It also tells this node where its members start in the room.
        """
        ...

    async def latest(self, room: str) -> tuple[str, int] | None:
        """The room's ``(epoch, seq)``, or None if it has no run; changes nothing."""
        ...

    async def read(
        self, room: str, since: int, limit: int, epoch: str | None = None
    ) -> HistoryPage:
        """At most ``limit`` of the room's kept messages after ``since``, in ``seq`` order,
        with its run and latest ``seq``, and whether they cover ``since`` (given the
        ``epoch`` the reader knows): see :class:`~chat.envelope.HistoryPage`.

        Changes nothing: unlike :meth:`recover`, a room without a run stays without.
        """
        ...


class PresenceStore(Protocol):
    """Who is in each room, counted per user over every process."""

    async def presence_enter(self, room: str, user: str) -> tuple[bool, list[str]]:
        """Count one more session of ``user`` in ``room``.

        Returns whether it is the user's first there, and the room's users.
        """
        ...

    async def presence_leave(self, room: str, user: str) -> bool:
        """Count one session less; True if it was the user's last in the room."""
        ...

    async def presence_users(self, room: str) -> list[str]:
        """The users with a session in ``room``, once each."""
        ...

    async def presence_counts(self, room: str) -> dict[str, int]:
        """Sessions per user in ``room`` (over every process), for the users with one."""
        ...

    async def announce(self, change: PresenceChange) -> None:
        """Deliver ``change`` to every node subscribed to its room."""
        ...


class Claims(Protocol):
    """Sessions per user over every process, for the per-user cap."""

    async def claim_session(self, user: str, cap: int) -> bool:
        """Count one more session of ``user`` unless it has ``cap`` already (0: no cap)."""
        ...

    async def release_session(self, user: str) -> None:
        """Count one session of ``user`` less."""
        ...


class ClusterView(Protocol):
    """The broker's health and the processes sharing it, for status."""

    @property
    def url(self) -> str:
        """The broker URL with any credentials masked."""
        ...

    @property
    def healthy(self) -> bool:
        """True while publishing and delivery work end to end."""
        ...

    def statistics(self) -> dict[str, Any]:
        """Extra health fields for ``/status`` ``broker`` (reconnects, last error, ...)."""
        ...

    async def nodes(self) -> list[NodeInfo] | None:
        """The live nodes sharing this broker, or None when there is only this process."""
        ...


class Control(Protocol):
    """Commands for every node: the server API's disconnects, wherever the sessions are."""

    async def disconnect(self, command: DisconnectCommand) -> Tally:
        """Hand ``command`` to every node sharing the broker, this one included, through
        the ``apply`` each gave to :meth:`Bus.run`, and collect how many sessions each
        closed.

        This node's count is exact. Another node's count is known if it answers within
        about a second; the live nodes that did not are listed as unanswered. Raises
        :class:`BrokerUnavailable` when it cannot send the command: ``uncertain`` if it
        may have reached some nodes (sending it again is harmless), otherwise nothing
        was done, here or anywhere.
        """
        ...


class Broker(Bus, History, PresenceStore, Claims, ClusterView, Control, Protocol):
    """The state the processes sharing rooms have in common, and the bus between them:
    what :func:`chat.brokers.open_broker` gives. Each part of chat takes the concerns it
    uses (the rooms a :class:`Bus` and :class:`PresenceStore`, status a :class:`ClusterView`).

    It knows nothing of sessions: it counts users per room, sessions per user
    and publications per room, and moves publications, presence changes and
    commands (which each node applies to its own sessions).
    """
