"""Local rooms: which sessions of this process are in which room, and the fan-out.

A publication is encoded once per process and handed to every local member
without waiting (:meth:`Member.deliver` only queues), so no member can slow a
room down. The broker subscription for a room is reference-counted: taken for
its first local member, released with its last. Presence is counted per user
(:class:`~chat.roster.Roster`): only a user's first session entering and last
session leaving are announced.
"""

from __future__ import annotations

from typing import Literal, Protocol

from chat.brokers import Broker, Publication
from chat.envelope import encode_message
from chat.protocol import Presence, encode
from chat.roster import Roster


class Member(Protocol):
    """A session as a room sees it."""

    @property
    def user(self) -> str: ...

    def deliver(self, publication: Publication, frame: str) -> None:
        """Queue one message (``frame`` is its encoded JSON ``message``); never waits.

        A member that cannot keep up closes itself.
        """
        ...

    def notify(self, frame: str) -> None:
        """Queue an encoded event (``presence``) if this member speaks JSON; never waits."""
        ...


class Rooms:
    """The rooms of this process, their members in join order, and their presence."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._members: dict[str, dict[Member, None]] = {}
        self.roster = Roster()

    async def join(self, room: str, member: Member) -> bool:
        """Add ``member`` to ``room``, subscribing this process on the first member.

        Returns True when this is the member's user's first session in the
        room. Raises what :meth:`Broker.subscribe` raises, with nothing joined.
        """
        first = self.roster.add(room, member.user)
        members = self._members.get(room)
        if members is not None:
            members[member] = None
            return first
        self._members[room] = {member: None}
        try:
            await self._broker.subscribe(room)
        except BaseException:
            self._drop(room, member)
            raise
        return first

    async def leave(self, room: str, member: Member) -> bool:
        """Remove ``member`` from ``room``; unsubscribe when it was the last one.

        Returns True when it was its user's last session in the room.
        """
        members = self._members.get(room)
        if members is None or member not in members:
            return False
        if self._drop(room, member):
            await self._broker.unsubscribe(room)
        return not self.roster.sessions(room, member.user)

    def _drop(self, room: str, member: Member) -> bool:
        """Forget ``member`` in ``room``; True when the room has no member left."""
        members = self._members[room]
        del members[member]
        self.roster.remove(room, member.user)
        if members:
            return False
        del self._members[room]
        return True

    def dispatch(self, publication: Publication) -> None:
        """Hand ``publication`` to every local member of its room (the broker's callback)."""
        members = self._members.get(publication.room)
        if not members:
            return
        frame = encode_message(publication)
        for member in members:
            member.deliver(publication, frame)

    def announce(
        self, room: str, event: Literal["join", "leave"], user: str, *, exclude: Member
    ) -> None:
        """Tell the other members of ``room`` that ``user`` arrived or left."""
        members = self._members.get(room)
        if not members:
            return
        frame = encode(Presence(room=room, event=event, user=user))
        for member in members:
            if member is not exclude:
                member.notify(frame)

    def users(self, room: str) -> list[str]:
        """The distinct users with a local session in ``room``, in arrival order."""
        return self.roster.users(room)

    def counts(self) -> dict[str, int]:
        """``{room: local member count}`` for every room with a local member."""
        return {room: len(members) for room, members in self._members.items()}
