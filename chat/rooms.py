"""Local rooms: which sessions of this process are in which room, and the fan-out.

A publication is encoded once per process and handed to every local member
without waiting (:meth:`Member.deliver` only queues), so no member can slow a
room down. The broker subscription for a room is reference-counted: taken for
its first local member (every joiner waits until it is in place), released
with its last by a task in the node's task group, so that leaving never
waits on the broker. Presence is counted per user by the broker (cluster-wide);
here a member only counts as present once its join fully succeeded, and only
present members are told about presence changes.

Each room keeps which users its members were told are present (each
member's ``joined`` list, then every change told since): the users every
member knows of, and those any member knows of. A change that would tell no
member anything new (a user who "joins" again when the broker rebuilt its
state after an outage, a leave of someone nobody knows of) is not passed on,
and no member is told about its own user. A new run of the room's ``seq``
(the broker lost its state) resets both to the broker's list, and every
member is told with a fresh ``joined``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import anyio

from chat.brokers import BrokerUnavailable, Bus, PresenceStore, Publication
from chat.envelope import PresenceChange, RunStarted, encode_message
from chat.protocol import Presence, encode

log = logging.getLogger("chat.rooms")

#: Runs ``work(*args)`` in the background; False (nothing run) once stopped.
Spawn = Callable[..., bool]


class Member(Protocol):
    """A session as a room sees it."""

    @property
    def id(self) -> str:
        """The session id."""
        ...

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

    def restarted(self, run: RunStarted) -> bool:
        """The room began a new run of its ``seq``: tell the client before its first message.

        True when the client knows ``run.users`` now (False: it followed that run
        already, and what it was told of presence stands).
        """
        ...


class RoomBroker(Bus, PresenceStore, Protocol):
    """What the rooms need of a broker: subscriptions and presence."""


class _Room:
    __slots__ = ("members", "present", "ready", "subscribed", "told_all", "told_any")

    def __init__(self) -> None:
        #: Members in join order: every one of them gets the room's messages.
        self.members: dict[Member, None] = {}
        #: Members whose join completed: they count in presence and hear about it.
        self.present: set[Member] = set()
        #: Set once the first member's subscribe returned (or failed).
        self.ready = anyio.Event()
        self.subscribed = False
        #: The users every present member / any present member was told are
        #: present (None before the first member entered).
        self.told_all: set[str] | None = None
        self.told_any: set[str] | None = None


class Rooms:
    """The rooms of this process and their members.

    ``spawn`` runs a background broker call (releasing presence, unsubscribing)
    in the node's task group; it returns False, running nothing, once the node
    has stopped.
    """

    def __init__(self, broker: RoomBroker, spawn: Spawn) -> None:
        self._broker = broker
        self._spawn = spawn
        self._rooms: dict[str, _Room] = {}
        #: Rooms whose unsubscribe is in flight: a new first member waits for it.
        self._unsubscribing: dict[str, anyio.Event] = {}

    async def join(self, room: str, member: Member) -> None:
        """Deliver ``room`` to ``member`` from now on; returns once this process is subscribed.

        Raises what :meth:`Bus.subscribe` raises, with nothing joined.
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

    def enter(self, room: str, member: Member, users: list[str]) -> None:
        """``member`` (joined, and counted by the broker) is present: it hears presence.

        ``users`` is the member list its ``joined`` carried.
        """
        state = self._rooms[room]
        state.present.add(member)
        if state.told_all is None or state.told_any is None:
            state.told_all, state.told_any = set(users), set(users)
        else:
            state.told_all.intersection_update(users)
            state.told_any.update(users)

    def users(self, room: str) -> list[str]:
        """The users any member of ``room`` was told are present, sorted."""
        state = self._rooms.get(room)
        return sorted(state.told_any or ()) if state is not None else []

    def leave(self, room: str, member: Member) -> None:
        """Stop delivering ``room`` to ``member``; never waits.

        A present member's presence is released in the background (announced
        when it was its user's last session); the last member's departure
        releases the subscription.
        """
        state = self._rooms.get(room)
        if state is None or member not in state.members:
            return
        del state.members[member]
        if member in state.present:
            state.present.discard(member)
            if not state.present:
                state.told_all = state.told_any = None  # told no one now
            self._spawn(self._release_presence, room, member.user, member.id)
        if not state.members and state.subscribed:
            del self._rooms[room]
            done = self._unsubscribing[room] = anyio.Event()
            if not self._spawn(self._unsubscribe, room, done):
                del self._unsubscribing[room]  # stopped: nothing to release to
                done.set()

    async def _release_presence(self, room: str, user: str, origin: str) -> None:
        try:
            if await self._broker.presence_leave(room, user):
                await self._broker.announce(PresenceChange(room, "leave", user, origin))
        except BrokerUnavailable:
            log.warning(
                "presence of %s in room %s not released: broker unavailable",
                user,
                room,
                extra={"user": user, "room": room},
            )

    async def _unsubscribe(self, room: str, done: anyio.Event) -> None:
        try:
            await self._broker.unsubscribe(room)
        except Exception:
            log.warning("unsubscribing room %s failed", room, exc_info=True, extra={"room": room})
        finally:
            if self._unsubscribing.get(room) is done:
                del self._unsubscribing[room]
            done.set()

    def dispatch(self, item: Publication | PresenceChange | RunStarted) -> None:
        """Hand a publication (or a presence change, or a new run) to the local members.

        The broker's callback: every member gets a message and a new run;
        present members of other users get a presence change that changes
        what they were told.
        """
        state = self._rooms.get(item.room)
        if state is None:
            return
        if isinstance(item, PresenceChange):
            self._change_presence(state, item)
            return
        if isinstance(item, RunStarted):
            self._restart(state, item)
            return
        if not state.members:
            return
        frame = encode_message(item)
        for member in state.members:
            member.deliver(item, frame)

    def _restart(self, state: _Room, run: RunStarted) -> None:
        """Every member hears of the new run; what they were told of presence is the run's
        users if each present member was told them, else merged with them."""
        told_everyone = True
        for member in list(state.members):
            if not member.restarted(run) and member in state.present:
                told_everyone = False
        if not state.present:
            return
        users = set(run.users)
        if told_everyone or state.told_all is None or state.told_any is None:
            state.told_all, state.told_any = users, set(users)
        else:
            state.told_all &= users
            state.told_any |= users

    def _change_presence(self, state: _Room, change: PresenceChange) -> None:
        told_all, told_any = state.told_all, state.told_any
        if told_all is not None and told_any is not None:
            user = change.user
            if change.event == "join":
                if user in told_all:
                    return  # every member knows of this user already
                told_all.add(user)
                told_any.add(user)
            else:
                if user not in told_any:
                    return  # no member knows of this user
                told_all.discard(user)
                told_any.discard(user)
        frame = encode(Presence(room=change.room, event=change.event, user=change.user))
        for member in state.present:
            if member.id != change.origin and member.user != change.user:
                member.notify(frame)

    def counts(self) -> dict[str, int]:
        """``{room: local member count}`` for every room with a local member."""
        return {room: len(state.members) for room, state in self._rooms.items()}
