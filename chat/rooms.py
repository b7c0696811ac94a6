"""Local rooms: which sessions of this process are in which room, and the fan-out.

A publication is encoded once per process and handed to every local member
without waiting (:meth:`Member.deliver` only queues), so no member can slow a
room down. The broker subscription for a room is reference-counted: taken for
its first local member, released with its last.
"""

from __future__ import annotations

from typing import Protocol

from chat.brokers import Broker, Publication
from chat.protocol import Message, encode


class Member(Protocol):
    """A session as a room sees it."""

    @property
    def user(self) -> str: ...

    def deliver(self, frame: str, text: str) -> None:
        """Queue one message: ``frame`` is the encoded JSON ``message``, ``text`` the bare text.

        Never waits; a member that cannot keep up closes itself.
        """
        ...


class Rooms:
    """The rooms of this process and their members, in join order."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._members: dict[str, dict[Member, None]] = {}

    async def join(self, room: str, member: Member) -> None:
        """Add ``member`` to ``room``, subscribing this process on the first member.

        Raises what :meth:`Broker.subscribe` raises, with nothing joined.
        """
        members = self._members.get(room)
        if members is not None:
            members[member] = None
            return
        self._members[room] = {member: None}
        try:
            await self._broker.subscribe(room)
        except BaseException:
            self._drop(room, member)
            raise

    async def leave(self, room: str, member: Member) -> None:
        """Remove ``member`` from ``room``; unsubscribe when it was the last one."""
        if self._drop(room, member):
            await self._broker.unsubscribe(room)

    def _drop(self, room: str, member: Member) -> bool:
        members = self._members.get(room)
        if members is None:
            return False
        members.pop(member, None)
        if members:
            return False
        del self._members[room]
        return True

    def dispatch(self, publication: Publication) -> None:
        """Hand ``publication`` to every local member of its room (the broker's callback)."""
        members = self._members.get(publication.room)
        if not members:
            return
        frame = encode(
            Message(
                room=publication.room,
                seq=publication.seq,
                id=publication.id,
                user=publication.user,
                text=publication.text,
                ts=publication.ts,
            )
        )
        text = publication.text
        for member in members:
            member.deliver(frame, text)

    def users(self, room: str) -> list[str]:
        """The distinct users with a local session in ``room``, in join order."""
        return list(dict.fromkeys(member.user for member in self._members.get(room, ())))

    def counts(self) -> dict[str, int]:
        """``{room: local member count}`` for every room with a local member."""
        return {room: len(members) for room, members in self._members.items()}
