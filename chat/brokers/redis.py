"""The Redis broker: many processes and hosts share rooms, presence and session caps.

Keys (room ids are checked before they get here):

* ``chat:{room}:meta`` hash ``seq``, ``epoch``; ``chat:{room}:log`` stream of
  the last ``CHAT_HISTORY_SIZE`` publications; ``chat:{room}`` the room's
  pub/sub channel (publications and presence changes, JSON).
* ``chat:presence:{room}`` hash user -> sessions; ``chat:sessions`` hash
  user -> sessions (the per-user cap).
* ``chat:nodes`` sorted set node -> last heartbeat (Redis time);
  ``chat:node:{node}`` hash ``sessions``, ``last_seen``; and each node's own
  share of presence and sessions, ``chat:node:{node}:presence`` and
  ``chat:node:{node}:claims``, so that a node that dies (no heartbeat for
  :data:`DEAD_AFTER` seconds) is reaped by the others: its sessions leave
  presence, caps and the node list.

Publishing is one Lua script: the room's next ``seq``, the stream entry and
the ``PUBLISH``. One pub/sub connection per process carries every local room,
subscribed once per room (the rooms layer counts members). Health is judged
end to end: every second the node publishes a canary to itself, and it is
unhealthy when the canary stops coming back within :data:`CANARY_DEADLINE`,
which also catches a subscription that went deaf silently. Every command has
a short timeout and no hidden retries, so a sender is refused within about a
second during an outage, never blocked. The subscriber runs in a loop that
cannot die: it reconnects with capped, jittered backoff (reset on success),
resubscribes every local room, re-asserts this node's presence and sessions,
and fills any gap in each room from its stream.

Only JSON travels on the bus.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable
from contextlib import suppress
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import orjson
from anyio.abc import TaskStatus
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from chat.brokers.base import BrokerUnavailable, Deliver, Snapshot
from chat.clock import Clock
from chat.envelope import Draft, NodeInfo, PresenceChange, Publication, Recovery, new_epoch

log = logging.getLogger("chat.broker")

T = TypeVar("T")

#: Seconds any one Redis command may take before the broker counts as down.
COMMAND_TIMEOUT = 0.5
#: Seconds between canaries, and without one before the broker is unhealthy.
CANARY_INTERVAL = 1.0
CANARY_DEADLINE = 3.0
#: Seconds between heartbeats (and reaping); a node silent this long is dead.
HEARTBEAT_INTERVAL = 2.0
DEAD_AFTER = 8.0
#: Reconnect backoff: doubled from the first to the cap, jittered, reset on success.
BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0
#: How long a room's ``seq`` and history live without a publish, at least.
MIN_ROOM_TTL = 60.0
#: Separates room and user in a node's presence hash (neither may contain it).
SEP = "\x1f"

PUBLISH = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local body = '{"k":"m","seq":' .. seq .. ',"epoch":"' .. epoch .. '",' .. ARGV[1]
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 'p', body)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], body)
return {seq, epoch}
"""

RECOVER = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
local entries = {}
if ARGV[3] == '1' then
  for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
    table.insert(entries, entry[2][2])
  end
end
return {seq, epoch, entries}
"""

PRESENCE_ENTER = """
local count = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return {count, redis.call('HKEYS', KEYS[1])}
"""

PRESENCE_LEAVE = """
local mine = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if mine <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
if mine < 0 then return 0 end
local count = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if count <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"""

CLAIM = """
local count = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local cap = tonumber(ARGV[2])
if cap > 0 and count >= cap then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
return 1
"""

RELEASE = """
local mine = redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
if mine <= 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
if mine < 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""

# Say this node is alive (Redis time), with its session count, and keep the
# seq and history of its rooms from expiring while it has members there.
HEARTBEAT = """
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZADD', KEYS[1], seconds, ARGV[1])
redis.call('HSET', KEYS[2], 'sessions', ARGV[2], 'last_seen', tostring(seconds))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
for i = 5, #ARGV do
  redis.call('PEXPIRE', 'chat:' .. ARGV[i] .. ':meta', ARGV[4])
  redis.call('PEXPIRE', 'chat:' .. ARGV[i] .. ':log', ARGV[4])
end
return 1
"""

NODES = """
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
local live = redis.call('ZRANGEBYSCORE', KEYS[1], seconds - tonumber(ARGV[1]), '+inf', 'WITHSCORES')
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (seconds - tonumber(ARGV[1])))
local found = {}
for i = 1, #live, 2 do
  local sessions = redis.call('HGET', 'chat:node:' .. live[i], 'sessions') or '0'
  table.insert(found, {live[i], sessions, live[i + 1]})
end
return {found, dead}
"""

# Reap a dead node: its presence and sessions leave the shared counts; the
# (room, user) pairs that emptied are returned for presence leave events.
REAP = """
local node = ARGV[1]
local presence = 'chat:node:' .. node .. ':presence'
local claims = 'chat:node:' .. node .. ':claims'
local left = {}
local fields = redis.call('HGETALL', presence)
for i = 1, #fields, 2 do
  local sep = string.find(fields[i], ARGV[2], 1, true)
  local room = string.sub(fields[i], 1, sep - 1)
  local user = string.sub(fields[i], sep + 1)
  local key = 'chat:presence:' .. room
  if redis.call('HINCRBY', key, user, -tonumber(fields[i + 1])) <= 0 then
    redis.call('HDEL', key, user)
    table.insert(left, room)
    table.insert(left, user)
  end
end
fields = redis.call('HGETALL', claims)
for i = 1, #fields, 2 do
  if redis.call('HINCRBY', KEYS[2], fields[i], -tonumber(fields[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[2], fields[i])
  end
end
redis.call('DEL', presence, claims, 'chat:node:' .. node)
redis.call('ZREM', KEYS[1], node)
return left
"""

# Make this node's share match what it really holds (after an outage, or a
# Redis that restarted empty): apply the differences to the shared counts.
SYNC = """
local node = ARGV[1]
local function sync(mine, shared_of, wanted)
  local have = {}
  local fields = redis.call('HGETALL', mine)
  for i = 1, #fields, 2 do have[fields[i]] = tonumber(fields[i + 1]) end
  for field, count in pairs(wanted) do
    local delta = count - (have[field] or 0)
    if delta ~= 0 then
      local key, member = shared_of(field)
      if redis.call('HINCRBY', key, member, delta) <= 0 then redis.call('HDEL', key, member) end
    end
    have[field] = nil
  end
  for field, count in pairs(have) do
    local key, member = shared_of(field)
    if redis.call('HINCRBY', key, member, -count) <= 0 then redis.call('HDEL', key, member) end
  end
  redis.call('DEL', mine)
  for field, count in pairs(wanted) do redis.call('HSET', mine, field, count) end
end
local presence = cjson.decode(ARGV[2])
local claims = cjson.decode(ARGV[3])
sync('chat:node:' .. node .. ':presence', function(field)
  local sep = string.find(field, ARGV[4], 1, true)
  return 'chat:presence:' .. string.sub(field, 1, sep - 1), string.sub(field, sep + 1)
end, presence)
sync('chat:node:' .. node .. ':claims', function(field) return KEYS[1], field end, claims)
return 1
"""


SCRIPTS = {
    "PUBLISH": PUBLISH,
    "RECOVER": RECOVER,
    "PRESENCE_ENTER": PRESENCE_ENTER,
    "PRESENCE_LEAVE": PRESENCE_LEAVE,
    "CLAIM": CLAIM,
    "RELEASE": RELEASE,
    "HEARTBEAT": HEARTBEAT,
    "NODES": NODES,
    "REAP": REAP,
    "SYNC": SYNC,
}


def mask_url(url: str) -> str:
    """``url`` with its password (and user) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def _channel(room: str) -> str:
    return f"chat:{room}"


class RedisBroker:
    """A :class:`~chat.brokers.base.Broker` over one Redis (``redis://`` or ``rediss://``)."""

    def __init__(
        self,
        url: str,
        clock: Clock,
        *,
        node_id: str,
        history_size: int,
        history_ttl: float,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        dead_after: float = DEAD_AFTER,
    ) -> None:
        self._url = url
        self._heartbeat_interval = heartbeat_interval
        self._dead_after = dead_after
        self._clock = clock
        self._node = node_id
        self._history_size = history_size
        self._history_ttl = history_ttl
        self._room_ttl_ms = int(max(history_ttl, MIN_ROOM_TTL) * 1000)
        self._redis: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._pubsub: PubSub | None = None
        self._deliver: Deliver | None = None
        self._snapshot: Snapshot | None = None
        #: Rooms this node wants delivered (subscribed or to resubscribe).
        self._rooms: set[str] = set()
        #: The last seq handed to ``deliver`` per room (and its epoch), for gap filling.
        self._delivered: dict[str, tuple[str, int]] = {}
        self._confirmations: dict[str, anyio.Event] = {}
        self._subscribed = False
        self._commands_ok = False
        self._canary_seen: float | None = None
        self._reconnect = anyio.Event()
        self.reconnects = 0
        self.last_error: str | None = None
        self.canary_lag_ms: float | None = None
        self._canary = f"chat:canary:{node_id}"

    # -- health ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return mask_url(self._url)

    @property
    def healthy(self) -> bool:
        if not (self._subscribed and self._commands_ok and self._canary_seen is not None):
            return False
        return self._clock.now() - self._canary_seen < CANARY_DEADLINE

    def statistics(self) -> dict[str, Any]:
        return {
            "reconnects": self.reconnects,
            "last_error": self.last_error,
            "canary_lag_ms": self.canary_lag_ms,
        }

    def _failed(self, error: BaseException) -> None:
        self._commands_ok = False
        self.last_error = type(error).__name__
        self._reconnect.set()

    async def _call(self, command: Awaitable[T]) -> T:
        """Run one command within :data:`COMMAND_TIMEOUT`; BrokerUnavailable otherwise."""
        try:
            with anyio.fail_after(COMMAND_TIMEOUT * 2):
                result = await command
        except (RedisError, OSError, TimeoutError) as error:
            self._failed(error)
            raise BrokerUnavailable(type(error).__name__) from None
        self._commands_ok = True
        return result

    def _client(self) -> Redis:
        return Redis.from_url(
            self._url,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            decode_responses=True,
            client_name=f"chat-{self._node}",
        )

    # -- running ---------------------------------------------------------------

    async def run(
        self, deliver: Deliver, snapshot: Snapshot, *, task_status: TaskStatus[None]
    ) -> None:
        self._deliver = deliver
        self._snapshot = snapshot
        self._redis = self._client()
        self._scripts = {
            name.lower(): self._redis.register_script(source) for name, source in SCRIPTS.items()
        }
        task_status.started()
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._subscriber)
                group.start_soon(self._canaries)
                group.start_soon(self._heartbeats)
        finally:
            self._deliver = None
            self._subscribed = False
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await self._close_pubsub()
                # Leave the cluster now rather than wait to be reaped: release
                # whatever this node still counts, and tell the others.
                with suppress(BrokerUnavailable):
                    await self._reap_node(self._node)
                await self._redis.aclose()

    async def _subscriber(self) -> None:
        """Keep one subscription carrying every local room, whatever happens."""
        backoff = BACKOFF_FIRST
        while True:
            try:
                await self._serve_subscription()
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as error:
                if self._subscribed:
                    log.warning("redis subscription lost (%s); reconnecting", type(error).__name__)
                self.last_error = type(error).__name__
            if self._subscribed:  # it had worked: start the backoff over
                backoff = BACKOFF_FIRST
            self._subscribed = False
            self.reconnects += 1
            await self._close_pubsub()
            await self._clock.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_CAP)

    async def _serve_subscription(self) -> None:
        assert self._redis is not None
        self._reconnect = anyio.Event()
        pubsub = self._redis.pubsub()
        self._pubsub = pubsub
        channels = [self._canary, *(_channel(room) for room in self._rooms)]
        with anyio.fail_after(COMMAND_TIMEOUT * 4):
            await pubsub.subscribe(*channels)
            pending = set(channels)
            while pending:
                message = await pubsub.get_message(timeout=COMMAND_TIMEOUT)
                if message is not None and message["type"] == "subscribe":
                    pending.discard(message["channel"])
        self._subscribed = True
        self._canary_seen = self._clock.now()
        log.info("redis subscription ready: %d rooms", len(self._rooms))
        await self._sync()
        await self._fill_gaps(list(self._rooms))
        while not self._reconnect.is_set():
            message = await pubsub.get_message(timeout=COMMAND_TIMEOUT)
            if message is not None:
                await self._on_message(message)
        raise ConnectionError("reconnect requested")

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            # A dead connection closes as it can.
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(COMMAND_TIMEOUT),
                suppress(Exception),
            ):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _on_message(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if kind == "subscribe":
            confirmed = self._confirmations.pop(channel, None)
            if confirmed is not None:
                confirmed.set()
            return
        if kind != "message":
            return
        if channel == self._canary:
            now = self._clock.now()
            self._canary_seen = now
            with suppress(ValueError):
                self.canary_lag_ms = round((now - float(message["data"])) * 1000, 1)
            return
        try:
            data = orjson.loads(message["data"])
        except orjson.JSONDecodeError:
            log.warning("ignoring a malformed message on %s", channel)
            return
        if data.get("k") == "p":
            self._hand_over(
                PresenceChange(data["room"], data["event"], data["user"], data["origin"])
            )
            return
        publication = _publication(data)
        known = self._delivered.get(publication.room)
        if known is not None and known[0] == publication.epoch and publication.seq > known[1] + 1:
            # A gap (messages published while this node was deaf): fill it first.
            await self._fill_gaps([publication.room])
        self._hand_over(publication)

    def _hand_over(self, item: Publication | PresenceChange) -> None:
        if item.room not in self._rooms:
            return
        if isinstance(item, Publication):
            known = self._delivered.get(item.room)
            if known is not None and known[0] == item.epoch and item.seq <= known[1]:
                return
            self._delivered[item.room] = (item.epoch, item.seq)
        if self._deliver is not None:
            self._deliver(item)

    async def _fill_gaps(self, rooms: list[str]) -> None:
        """Deliver what each room's stream has after what this node last delivered."""
        for room in rooms:
            known = self._delivered.get(room)
            if known is None:
                continue
            try:
                recovery = await self.recover(room, known[1], known[0])
            except BrokerUnavailable:
                return
            for publication in recovery.publications:
                self._hand_over(publication)

    async def _canaries(self) -> None:
        while True:
            await self._clock.sleep(CANARY_INTERVAL)
            assert self._redis is not None
            with suppress(BrokerUnavailable):
                await self._call(self._redis.publish(self._canary, str(self._clock.now())))
            seen = self._canary_seen
            if self._subscribed and (seen is None or self._clock.now() - seen > CANARY_DEADLINE):
                # Commands work but the subscription hears nothing: rebuild it.
                self.last_error = "canary lost"
                self._reconnect.set()

    async def _heartbeats(self) -> None:
        while True:
            try:
                await self._heartbeat()
                await self._reap()
            except BrokerUnavailable:
                pass
            await self._clock.sleep(self._heartbeat_interval)

    async def _heartbeat(self) -> None:
        assert self._redis is not None
        assert self._snapshot is not None
        state = self._snapshot()
        await self._call(
            self._scripts["heartbeat"](
                keys=["chat:nodes", f"chat:node:{self._node}"],
                args=[
                    self._node,
                    state.sessions,
                    int(self._dead_after * 2000),
                    self._room_ttl_ms,
                    *sorted(self._rooms),
                ],
            )
        )

    async def _reap(self) -> None:
        assert self._redis is not None
        _live, dead = await self._call(
            self._scripts["nodes"](keys=["chat:nodes"], args=[self._dead_after])
        )
        for node in dead:
            if node != self._node:
                log.info("node %s stopped answering: reaping it", node)
                await self._reap_node(node)

    async def _reap_node(self, node: str) -> None:
        """Release a node's presence and sessions, drop it from the list, announce leaves."""
        left = await self._call(
            self._scripts["reap"](keys=["chat:nodes", "chat:sessions"], args=[node, SEP])
        )
        for room, user in zip(left[::2], left[1::2], strict=True):
            await self.announce(PresenceChange(room, "leave", user, ""))

    async def _sync(self) -> None:
        """Make this node's share of presence and sessions in Redis match what it holds."""
        assert self._redis is not None
        assert self._snapshot is not None
        state = self._snapshot()
        presence = {f"{room}{SEP}{user}": n for (room, user), n in state.presence.items()}
        await self._call(
            self._scripts["sync"](
                keys=["chat:sessions"],
                args=[
                    self._node,
                    orjson.dumps(presence or {}).decode(),
                    orjson.dumps(state.claims or {}).decode(),
                    SEP,
                ],
            )
        )

    # -- the broker interface ----------------------------------------------------

    async def publish(self, draft: Draft) -> Publication:
        if not self.healthy:
            raise BrokerUnavailable("broker unhealthy")
        assert self._redis is not None
        body = orjson.dumps(
            {
                "room": draft.room,
                "user": draft.user,
                "text": draft.text,
                "id": draft.id,
                "ts": draft.ts,
            }
        ).decode()[1:]
        seq, epoch = await self._call(
            self._scripts["publish"](
                keys=[f"chat:{draft.room}:meta", f"chat:{draft.room}:log"],
                args=[
                    body,
                    new_epoch(),
                    self._history_size if self._history_ttl else 0,
                    self._room_ttl_ms,
                    _channel(draft.room),
                ],
            )
        )
        return Publication(
            room=draft.room,
            seq=int(seq),
            user=draft.user,
            text=draft.text,
            id=draft.id,
            ts=draft.ts,
            epoch=str(epoch),
        )

    async def subscribe(self, room: str) -> None:
        if not self.healthy or self._pubsub is None:
            raise BrokerUnavailable("broker unhealthy")
        channel = _channel(room)
        confirmed = self._confirmations[channel] = anyio.Event()
        self._rooms.add(room)
        try:
            await self._call(self._pubsub.subscribe(channel))
            with anyio.fail_after(COMMAND_TIMEOUT * 2):
                await confirmed.wait()
        except (BrokerUnavailable, TimeoutError):
            self._rooms.discard(room)
            self._confirmations.pop(channel, None)
            self._reconnect.set()
            raise BrokerUnavailable("subscribe failed") from None

    async def unsubscribe(self, room: str) -> None:
        self._rooms.discard(room)
        self._delivered.pop(room, None)
        pubsub = self._pubsub
        if pubsub is not None and self._subscribed:
            await self._call(pubsub.unsubscribe(_channel(room)))

    async def recover(self, room: str, since: int | None, epoch: str | None = None) -> Recovery:
        assert self._redis is not None
        seq, current, entries = await self._call(
            self._scripts["recover"](
                keys=[f"chat:{room}:meta", f"chat:{room}:log"],
                args=[new_epoch(), self._room_ttl_ms, "1" if since is not None else "0"],
            )
        )
        latest, current = int(seq), str(current)
        if room in self._rooms and room not in self._delivered:
            # The first local member's view of the room: later gaps are filled from here.
            self._delivered[room] = (current, latest)
        if since is None or (epoch is not None and epoch != current) or since > latest:
            return Recovery(latest, current)
        if since == latest:
            return Recovery(latest, current, complete=True)
        horizon = self._clock.time() - self._history_ttl
        kept = [
            p
            for p in (_publication(orjson.loads(raw)) for raw in entries)
            if p.seq > since and p.ts > horizon and p.epoch == current
        ]
        if not kept or kept[0].seq != since + 1 or kept[-1].seq != latest:
            return Recovery(latest, current)
        return Recovery(latest, current, tuple(kept), complete=True)

    async def presence_enter(self, room: str, user: str) -> tuple[bool, list[str]]:
        assert self._redis is not None
        count, users = await self._call(
            self._scripts["presence_enter"](
                keys=[f"chat:presence:{room}", f"chat:node:{self._node}:presence"],
                args=[user, f"{room}{SEP}{user}"],
            )
        )
        return int(count) == 1, sorted(users)

    async def presence_leave(self, room: str, user: str) -> bool:
        assert self._redis is not None
        last = await self._call(
            self._scripts["presence_leave"](
                keys=[f"chat:presence:{room}", f"chat:node:{self._node}:presence"],
                args=[user, f"{room}{SEP}{user}"],
            )
        )
        return bool(last)

    async def presence_users(self, room: str) -> list[str]:
        assert self._redis is not None
        users: list[str] = await self._call(self._redis.hkeys(f"chat:presence:{room}"))  # type: ignore[arg-type]
        return sorted(users)

    async def announce(self, change: PresenceChange) -> None:
        assert self._redis is not None
        body = orjson.dumps(
            {
                "k": "p",
                "room": change.room,
                "event": change.event,
                "user": change.user,
                "origin": change.origin,
            }
        )
        await self._call(self._redis.publish(_channel(change.room), body))

    async def claim_session(self, user: str, cap: int) -> bool:
        assert self._redis is not None
        claimed = await self._call(
            self._scripts["claim"](
                keys=["chat:sessions", f"chat:node:{self._node}:claims"], args=[user, cap]
            )
        )
        return bool(claimed)

    async def release_session(self, user: str) -> None:
        assert self._redis is not None
        await self._call(
            self._scripts["release"](
                keys=["chat:sessions", f"chat:node:{self._node}:claims"], args=[user]
            )
        )

    async def nodes(self) -> list[NodeInfo] | None:
        assert self._redis is not None
        live, _ = await self._call(
            self._scripts["nodes"](keys=["chat:nodes"], args=[self._dead_after])
        )
        return [NodeInfo(node, int(sessions), float(seen)) for node, sessions, seen in live]


def _publication(data: dict[str, Any]) -> Publication:
    return Publication(
        room=data["room"],
        seq=int(data["seq"]),
        user=data["user"],
        text=data["text"],
        id=data.get("id"),
        ts=float(data["ts"]),
        epoch=data["epoch"],
    )
