"""Per-room recovery state: the last ``seq`` and ``epoch`` seen, dedupe, unrecoverable gaps. Pure.

The server replays what a client missed when it rejoins with ``since`` and
``epoch`` (``docs/protocol.md``, Recovery), before any live message. This
module keeps, per room, what to ask for and what was already delivered, so
every message reaches the application once and in ``seq`` order across any
number of connections: a message at or below the last delivered ``seq`` of
the same run is a duplicate and is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chat.client.events import Event, Joined, Message, PresenceEvent, RoomUnrecoverable


@dataclass
class RoomState:
    """One room the application is in (or was, until its ``left``)."""

    name: str
    #: The application wants to be in it (it joined it and has not left it).
    wanted: bool = True
    #: The last delivered ``seq`` and its run's ``epoch`` (None before the first ``joined``).
    seq: int | None = None
    epoch: str | None = None
    #: Joined on the current connection.
    joined: bool = False
    #: Its ``join`` (or the URL's handshake) awaits the server's answer on this connection.
    join_sent: bool = False
    #: Its ``join`` is not written before this time (after a refusal, ``retry_at``).
    retry_at: float = 0.0
    #: Joins of it refused with a retried code on this connection.
    refusals: int = 0
    #: Its ``leave`` is written (``wanted`` false): awaits ``left``.
    leave_sent: bool = False
    #: Messages up to this ``seq`` are a replay of the current connection's recovery.
    replay_until: int = -1
    members: dict[str, None] = field(default_factory=dict)


@dataclass
class RoomStatistics:
    """Counters for tests and the benchmark."""

    duplicates: int = 0
    gaps: int = 0
    unrecoverable: int = 0


class Rooms:
    """The rooms of one client, across its connections."""

    def __init__(self) -> None:
        self._rooms: dict[str, RoomState] = {}
        self.statistics = RoomStatistics()

    def __contains__(self, room: str) -> bool:
        state = self._rooms.get(room)
        return state is not None and state.wanted

    def get(self, room: str) -> RoomState | None:
        return self._rooms.get(room)

    def wanted(self) -> list[RoomState]:
        """The rooms to be in, in the order they were first joined."""
        return [state for state in self._rooms.values() if state.wanted]

    def joined(self, room: str) -> bool:
        """Joined on the current connection."""
        state = self._rooms.get(room)
        return state is not None and state.wanted and state.joined

    def ready(self, room: str) -> bool:
        """Joined on the current connection and its replay delivered: sends to it may go out.

        A send lost with its connection may be in the replay (published before
        the loss): it is settled from there rather than sent again.
        """
        state = self._rooms.get(room)
        return (
            state is not None
            and state.wanted
            and state.joined
            and (state.seq is None or state.seq >= state.replay_until)
        )

    def to_join(self, now: float) -> list[RoomState]:
        """Wanted rooms whose ``join`` may be written now, in the order they were joined."""
        return [
            s
            for s in self._rooms.values()
            if s.wanted and not s.joined and not s.join_sent and s.retry_at <= now
        ]

    def next_join(self) -> float | None:
        """The earliest time a ``join`` waits for (None: none waits)."""
        times = [
            s.retry_at
            for s in self._rooms.values()
            if s.wanted and not s.joined and not s.join_sent
        ]
        return min(times) if times else None

    def to_leave(self) -> list[RoomState]:
        """Rooms the application left whose ``leave`` is still to be written."""
        return [s for s in self._rooms.values() if not s.wanted and s.joined and not s.leave_sent]

    def join_refused(self, room: str, now: float, delay: float) -> RoomState | None:
        """A ``join`` of a wanted ``room`` was refused with a retried code: again in ``delay``."""
        state = self._rooms.get(room)
        if state is None or not state.wanted:
            return None
        state.join_sent = False
        state.refusals += 1
        state.retry_at = now + delay
        return state

    def forget(self, room: str) -> None:
        """Drop ``room``'s state (a ``join`` refused for good, a ``leave`` cut off)."""
        self._rooms.pop(room, None)

    def want(self, room: str) -> RoomState:
        """The application asks to be in ``room``; an old state of it is forgotten."""
        state = self._rooms.get(room)
        if state is None or not state.wanted:
            state = self._rooms[room] = RoomState(room)
        return state

    def unwant(self, room: str) -> bool:
        """The application leaves ``room``; whether it was in it."""
        state = self._rooms.get(room)
        if state is None or not state.wanted:
            return False
        state.wanted = False
        return True

    def recovery(self, room: str) -> tuple[int | None, str | None]:
        """The ``since`` and ``epoch`` to rejoin ``room`` with (None, None the first time)."""
        state = self._rooms.get(room)
        if state is None or state.seq is None:
            return None, None
        return state.seq, state.epoch

    def connection_lost(self) -> list[str]:
        """No room is joined any more; what was delivered is kept for the rejoin.

        Returns the rooms the application left whose ``left`` had not come:
        with the connection, the client is out of them (forgotten here).
        """
        gone = [name for name, state in self._rooms.items() if not state.wanted]
        for name in gone:
            del self._rooms[name]
        for state in self._rooms.values():
            state.joined = False
            state.join_sent = False
            state.leave_sent = False
            state.refusals = 0
            state.retry_at = 0.0
            state.replay_until = -1
        return gone

    def on_joined(self, frame: dict[str, Any]) -> list[Event]:
        """The events for a ``joined`` frame of a wanted room (nothing for another room)."""
        room, seq, epoch = frame["room"], int(frame["seq"]), str(frame["epoch"])
        state = self._rooms.get(room)
        if state is None:
            return []
        state.join_sent = False
        if not state.wanted:
            # Left while its join was on the way: held now, so its leave goes out.
            state.joined = True
            return []
        members = tuple(str(m["user"]) for m in frame.get("members", ()))
        state.members = dict.fromkeys(members)
        events: list[Event] = []
        rejoined = state.seq is not None
        recovered = bool(frame.get("recovered")) and not state.joined and epoch == state.epoch
        if rejoined and not recovered:
            assert state.seq is not None
            assert state.epoch is not None
            self.statistics.unrecoverable += 1
            events.append(
                RoomUnrecoverable(
                    room=room,
                    last_seq=state.seq,
                    last_epoch=state.epoch,
                    seq=seq,
                    epoch=epoch,
                    reason="gap" if epoch == state.epoch else "new_run",
                )
            )
        if recovered:
            state.replay_until = seq
        else:
            state.seq = seq
        state.epoch = epoch
        state.joined = True
        events.append(Joined(room, seq, epoch, members, recovered=recovered, rejoined=rejoined))
        return events

    def on_message(self, frame: dict[str, Any]) -> Message | None:
        """The message to deliver, or None: a room not joined, or a duplicate."""
        state = self._rooms.get(frame["room"])
        if state is None or not state.wanted or not state.joined:
            return None
        seq = int(frame["seq"])
        if state.seq is not None and seq <= state.seq:
            self.statistics.duplicates += 1
            return None
        if state.seq is not None and seq > state.seq + 1:
            self.statistics.gaps += 1
        state.seq = seq
        return Message(
            room=state.name,
            seq=seq,
            id=frame.get("id"),
            user=str(frame.get("user", "")),
            text=str(frame.get("text", "")),
            ts=float(frame.get("ts", 0.0)),
            replayed=seq <= state.replay_until,
        )

    def on_presence(self, frame: dict[str, Any]) -> PresenceEvent | None:
        state = self._rooms.get(frame["room"])
        event = frame.get("event")
        if state is None or not state.wanted or event not in ("join", "leave"):
            return None
        user = str(frame["user"])
        if event == "join":
            state.members[user] = None
        else:
            state.members.pop(user, None)
        return PresenceEvent(state.name, event, user)

    def on_left(self, room: str) -> bool:
        """The server confirmed a ``leave``; whether the application asked for it."""
        state = self._rooms.get(room)
        if state is None:
            return False
        state.joined = False
        state.leave_sent = False
        if state.wanted:
            return False
        del self._rooms[room]
        return True
