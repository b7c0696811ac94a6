"""What this node holds, counted in Redis: presence, session claims, and its place in the cluster.

Each count lives twice: in the shared key (a room's presence, the cluster's
sessions per user) and in this node's own share (``chat:node:{node}:presence``
and ``:claims``), so that a node that dies (no heartbeat for ``dead_after``
seconds) is reaped by the others: its users leave presence (announced), its
sessions leave the caps and the node list. A resync makes the share in Redis
match what the node holds (after an outage, a reap, or a Redis that restarted
empty), announcing what changed.

Changes of this node's share, and its resync, hold one lock: a resync never
races a change in flight, so the share in Redis converges on the counts kept here.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Literal

import anyio
import orjson

from chat.brokers.base import discount
from chat.brokers.redis import keys
from chat.brokers.redis.link import Link
from chat.envelope import NodeInfo, PresenceChange

log = logging.getLogger("chat.broker")

#: Seconds between heartbeats (and reaping); a node silent this long is dead.
HEARTBEAT_INTERVAL = 2.0
DEAD_AFTER = 8.0
#: Reads of a dead node's share before a reap gives up until the next round.
REAP_ATTEMPTS = 3


class Shares:
    """This node's presence and claims, and the cluster's node list."""

    def __init__(self, link: Link, node_id: str, *, dead_after: float = DEAD_AFTER) -> None:
        self._link = link
        self._node = node_id
        self._dead_after = dead_after
        self._presence: Counter[tuple[str, str]] = Counter()
        self._claims: Counter[str] = Counter()
        self._lock = anyio.Lock()

    # -- presence ------------------------------------------------------------------

    async def enter(self, room: str, user: str) -> tuple[bool, list[str]]:
        """One more session of ``user`` in ``room``: whether it is the user's first there,
        and the room's users."""
        async with self._lock:
            count, users = await self._link.call(
                self._link.scripts["presence_enter"](
                    keys=[keys.presence(room), keys.node_presence(self._node)],
                    args=[user, f"{room}{keys.SEP}{user}"],
                )
            )
            self._presence[room, user] += 1
        return int(count) == 1, sorted(users)

    async def leave(self, room: str, user: str) -> bool:
        """One session less; True if it was the user's last in the room."""
        async with self._lock:
            discount(self._presence, (room, user))
            last = await self._link.call(
                self._link.scripts["presence_leave"](
                    keys=[keys.presence(room), keys.node_presence(self._node)],
                    args=[user, f"{room}{keys.SEP}{user}"],
                )
            )
        return bool(last)

    async def users(self, room: str) -> list[str]:
        """The room's users, once each."""
        users: list[str] = await self._link.call(
            self._link.commands.hkeys(keys.presence(room))  # type: ignore[arg-type]
        )
        return sorted(users)

    async def counts(self, room: str) -> dict[str, int]:
        """Sessions per user in the room, over every node."""
        counts: dict[str, str] = await self._link.call(
            self._link.commands.hgetall(keys.presence(room))  # type: ignore[arg-type]
        )
        return {user: int(n) for user, n in counts.items() if int(n) > 0}

    async def announce(self, change: PresenceChange) -> None:
        """Deliver ``change`` to every node subscribed to its room."""
        body = orjson.dumps(
            {
                "k": "p",
                "room": change.room,
                "event": change.event,
                "user": change.user,
                "origin": change.origin,
            }
        )
        await self._link.call(self._link.once.publish(keys.channel(change.room), body))

    # -- claims ----------------------------------------------------------------------

    async def claim(self, user: str, cap: int) -> bool:
        """Count one more session of ``user`` unless it has ``cap`` already (0: no cap)."""
        async with self._lock:
            claimed = await self._link.call(
                self._link.scripts["claim"](
                    keys=[keys.SESSIONS, keys.node_claims(self._node)], args=[user, cap]
                )
            )
            if claimed:
                self._claims[user] += 1
        return bool(claimed)

    async def release(self, user: str) -> None:
        """Count one session of ``user`` less."""
        async with self._lock:
            discount(self._claims, user)
            await self._link.call(
                self._link.scripts["release"](
                    keys=[keys.SESSIONS, keys.node_claims(self._node)], args=[user]
                )
            )

    # -- the cluster ---------------------------------------------------------------

    async def beat(self, sessions: int, rooms: list[str], room_ttl_ms: int) -> bool:
        """Say this node is alive with ``sessions``, keeping its ``rooms``' seq and history
        from expiring; True when it was not in the node list (new, or reaped meanwhile)."""
        room_keys = [key for room in sorted(rooms) for key in (keys.meta(room), keys.log(room))]
        added = await self._link.call(
            self._link.scripts["heartbeat"](
                keys=[keys.NODES, keys.NODE_SESSIONS, *room_keys],
                args=[self._node, sessions, room_ttl_ms],
            )
        )
        return bool(added)

    async def nodes(self) -> tuple[list[NodeInfo], list[str]]:
        """The live nodes, and the names of the dead ones not reaped yet."""
        live, dead = await self._link.call(
            self._link.scripts["nodes"](
                keys=[keys.NODES, keys.NODE_SESSIONS], args=[self._dead_after]
            )
        )
        found = [NodeInfo(node, int(sessions), float(seen)) for node, sessions, seen in live]
        return found, [str(node) for node in dead]

    async def reap(self, node: str, *, leaving: bool = False) -> list[PresenceChange]:
        """Release a dead node's presence and sessions (or this node's, ``leaving``);
        the presence leaves that makes, for announcing."""
        for _ in range(REAP_ATTEMPTS):
            rooms = sorted(await self._rooms_of(node))
            left = await self._link.call(
                self._link.scripts["reap"](
                    keys=[
                        keys.NODES,
                        keys.SESSIONS,
                        keys.NODE_SESSIONS,
                        keys.node_presence(node),
                        keys.node_claims(node),
                        *(keys.presence(room) for room in rooms),
                    ],
                    args=[node, keys.SEP, self._dead_after, "1" if leaving else "0", *rooms],
                )
            )
            if left is not None:
                if left and not leaving:
                    log.info("node %s stopped answering: reaped", node)
                return _changes(left, "leave")
        # Its share kept changing (it is alive after all): the next round tries again.
        log.warning("node %s: its share changed while it was being reaped", node)
        return []

    async def _rooms_of(self, node: str) -> set[str]:
        """The rooms in ``node``'s presence share."""
        fields: list[str] = await self._link.call(
            self._link.commands.hkeys(keys.node_presence(node))  # type: ignore[arg-type]
        )
        return {field.partition(keys.SEP)[0] for field in fields}

    async def resync(self) -> list[PresenceChange]:
        """Make this node's share in Redis match what it holds; the presence changes
        that makes (users that appeared or emptied), for announcing."""
        async with self._lock:
            presence = {f"{room}{keys.SEP}{user}": n for (room, user), n in self._presence.items()}
            shared = await self._rooms_of(self._node)
            rooms = sorted(shared | {room for room, _ in self._presence})
            joined, left = await self._link.call(
                self._link.scripts["sync"](
                    keys=[
                        keys.SESSIONS,
                        keys.node_presence(self._node),
                        keys.node_claims(self._node),
                        *(keys.presence(room) for room in rooms),
                    ],
                    args=[
                        _json_object(presence),
                        _json_object(dict(self._claims)),
                        keys.SEP,
                        *rooms,
                    ],
                )
            )
        return _changes(joined, "join") + _changes(left, "leave")


def _json_object(mapping: dict[str, int]) -> str:
    # cjson turns an empty JSON object into an empty Lua table, like an array:
    # both iterate as nothing, which is what an empty share means.
    return orjson.dumps(mapping).decode()


def _changes(pairs: list[str], event: Literal["join", "leave"]) -> list[PresenceChange]:
    return [
        PresenceChange(room, event, user, "")
        for room, user in zip(pairs[::2], pairs[1::2], strict=True)
    ]
