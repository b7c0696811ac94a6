"""Local rooms: which sessions of this process are in which room, and the fan-out.

A publication is encoded once per process and handed to every local member
without waiting (:meth:`Member.deliver` only queues), so no member can slow a
room down. The broker subscription for a room is reference-counted: taken for
its first local member (every joiner waits until it is in place), released
with its last by a task :meth:`Rooms.run` owns, so that leaving never waits
on the broker. Presence is counted per user (:class:`~chat.roster.Roster`):
a member enters it only once its join has fully succeeded, and only a user's
first session entering and last session leaving are announced.
"""

from __future__ import annotations

import logging
from typing import Literal, Protocol

import anyio
from anyio.abc import TaskGroup

from chat.brokers import Broker, Publication
from chat.envelope import encode_message
from chat.protocol import Presence, encode
from chat.roster import Roster

log = logging.getLogger("chat.rooms")


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


class _Room:
    __slots__ = ("members", "present", "ready", "subscribed")

    def __init__(self) -> None:
        #: Members in join order: every one of them gets the room's messages.
        self.members: dict[Member, None] = {}
        #: Members whose join completed: they count in presence.
        self.present: set[Member] = set()
        #: Set once the first member's subscribe returned (or failed).
        self.ready = anyio.Event()
        self.subscribed = False


class Rooms:
    """The rooms of this process, their members and their presence. Run :meth:`run`."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._rooms: dict[str, _Room] = {}
        #: Rooms whose unsubscribe is in flight: a new first member waits for it.
        self._unsubscribing: dict[str, anyio.Event] = {}
        self._group: TaskGroup | None = None
        self.roster = Roster()

    async def run(self) -> None:
        """Own the unsubscribe tasks until cancelled (run it in the node's task group)."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                await anyio.sleep_forever()
            finally:
                self._group = None

    async def join(self, room: str, member: Member) -> None:
        """Deliver ``room`` to ``member`` from now on; returns once this process is subscribed.

        Raises what :meth:`Broker.subscribe` raises, with nothing joined.
        """
        while True:
            pending = self._unsubscribing.get(room)
            if pending is not None:
                await pending.wait()
                continue
            state = self._rooms.get(room)
            if state is None:
                state = self._rooms[room] = _Room()
                state.members[member] = None
                try:
                    await self._broker.subscribe(room)
                except BaseException:
                    if self._rooms.get(room) is state:
                        del self._rooms[room]
                    state.ready.set()  # the others waiting try again themselves
                    raise
                state.subscribed = True
                state.ready.set()
                return
            state.members[member] = None
            if state.subscribed:
                return
            try:
                await state.ready.wait()
            except BaseException:
                state.members.pop(member, None)
                raise
            if self._rooms.get(room) is state:  # the first member's subscribe succeeded
                return
            state.members.pop(member, None)

    def enter(self, room: str, member: Member) -> bool:
        """Count ``member`` (joined) in the room's presence; True for its user's first session."""
        self._rooms[room].present.add(member)
        return self.roster.add(room, member.user)

    def leave(self, room: str, member: Member) -> bool:
        """Stop delivering ``room`` to ``member``; never waits.

        Returns True when the member was present and its user's last session
        there. The last member's departure releases the subscription in the
        background.
        """
        state = self._rooms.get(room)
        if state is None or member not in state.members:
            return False
        del state.members[member]
        last = False
        if member in state.present:
            state.present.discard(member)
            last = self.roster.remove(room, member.user)
        if not state.members and state.subscribed:
            del self._rooms[room]
            self._release(room)
        return last

    def _release(self, room: str) -> None:
        if self._group is None:  # not running: nothing to release to
            return
        done = self._unsubscribing[room] = anyio.Event()
        self._group.start_soon(self._unsubscribe, room, done)

    async def _unsubscribe(self, room: str, done: anyio.Event) -> None:
        try:
            await self._broker.unsubscribe(room)
        except Exception:
            log.warning("unsubscribing room %s failed", room, exc_info=True)
        finally:
            if self._unsubscribing.get(room) is done:
                del self._unsubscribing[room]
            done.set()

    def dispatch(self, publication: Publication) -> None:
        """Hand ``publication`` to every local member of its room (the broker's callback)."""
        state = self._rooms.get(publication.room)
        if state is None or not state.members:
            return
        frame = encode_message(publication)
        for member in state.members:
            member.deliver(publication, frame)

    def announce(
        self, room: str, event: Literal["join", "leave"], user: str, *, exclude: Member
    ) -> None:
        """Tell the other present members of ``room`` that ``user`` arrived or left."""
        state = self._rooms.get(room)
        if state is None or not state.present:
            return
        frame = encode(Presence(room=room, event=event, user=user))
        for member in state.present:
            if member is not exclude:
                member.notify(frame)

    def users(self, room: str) -> list[str]:
        """The distinct users present in ``room`` on this node, in arrival order."""
        return self.roster.users(room)

    def counts(self) -> dict[str, int]:
        """``{room: local member count}`` for every room with a local member."""
        return {room: len(state.members) for room, state in self._rooms.items()}
