"""The Redis broker: many processes and hosts share rooms, presence and session caps.

Keys (room ids, user names and node ids are checked before they get here,
and each kind of key has its own prefix, so no two can collide):

* ``chat:room:{room}:meta`` hash ``seq``, ``epoch``; ``chat:room:{room}:log``
  stream of the last ``CHAT_HISTORY_SIZE`` publications;
  ``chat:room:{room}:presence`` hash user -> sessions; ``chat:room:{room}`` the
  room's pub/sub channel (publications and presence changes, JSON).
* ``chat:sessions`` hash user -> sessions (the per-user cap).
* ``chat:sent:{user}`` hash ``room SEP id`` -> ``seq epoch digest time`` and
  ``chat:sent-order:{user}`` sorted set of the same fields by time: the user's
  recent sends with an ``id`` (``CHAT_SEND_ID_WINDOW``, at most
  :data:`~chat.idempotency.IDS_PER_USER`), so a retry is recognised on any
  node (:mod:`chat.idempotency`).
* ``chat:nodes`` sorted set node -> last heartbeat (Redis time);
  ``chat:node:{node}:info`` hash ``sessions``, ``last_seen``; and each node's
  own share of presence and sessions, ``chat:node:{node}:presence`` and
  ``chat:node:{node}:claims``, so that a node that dies (no heartbeat for
  :data:`DEAD_AFTER` seconds) is reaped by the others: its users leave
  presence (announced), its sessions leave the caps and the node list.

A room's ``epoch`` is its stored run name plus the Redis server's ``run_id``:
a Redis that restarted (empty, or from an older snapshot) starts new runs,
so no ``seq`` is ever reused under the same epoch.

Publishing is one Lua script: the retry check, the room's next ``seq``, the
stream entry, the ``PUBLISH`` and the sent-id record. One pub/sub connection
per process carries every local room, subscribed once per room (the rooms
layer counts members). Health is judged end to end: every second the node
publishes a canary to itself, and it is unhealthy when the canary stops
coming back within :data:`CANARY_DEADLINE`, which also catches a
subscription that went deaf silently. Every command has a short timeout and
no hidden retries, so a sender is refused within about a second during an
outage, never blocked; an error reply from Redis (a bug, not an outage) is
logged and fails only that call. The subscriber runs in a loop that cannot
die: it reconnects with capped, jittered backoff (reset once a canary came
back), resubscribes every local room, re-asserts this node's share of
presence and sessions (announcing what changed), and fills each room's gap
from its stream while holding that room's live messages back (and announces
a new run of the room, :class:`~chat.envelope.RunStarted`, before its first
message).

Only JSON travels on the bus.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Awaitable
from contextlib import suppress
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import orjson
from anyio.abc import TaskGroup, TaskStatus
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from chat.brokers.base import BrokerUnavailable, Deliver, SessionCount, discount
from chat.clock import Clock
from chat.envelope import (
    Draft,
    NodeInfo,
    PresenceChange,
    Publication,
    Recovery,
    RunStarted,
    new_epoch,
    recovery,
)
from chat.idempotency import IDS_PER_USER, text_digest

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
#: Rooms whose gaps are filled at once after a reconnect.
FILL_CONCURRENCY = 16
#: Separates room and user in a node's presence hash (neither may contain it).
SEP = "\x1f"

# KEYS: the room's meta and log, the user's sent ids (hash) and their order
# (sorted set by time). With an id (ARGV[7] = room SEP id, ARGV[8] the text's
# digest), a retry within the window returns the first seq, flagged 1, and
# publishes nothing; otherwise the id is remembered, the user's last ARGV[10]
# ids within ARGV[9] ms kept.
PUBLISH = """
local sent_at
if ARGV[7] ~= '' then
  local now = redis.call('TIME')
  sent_at = now[1] * 1000 + math.floor(now[2] / 1000)
  local found = redis.call('HGET', KEYS[3], ARGV[7])
  if found then
    local seq, epoch, digest, at = string.match(found, '^(%d+) (%S+) (%x+) (%d+)$')
    if digest == ARGV[8] and tonumber(at) > sent_at - tonumber(ARGV[9]) then
      return {tonumber(seq), epoch, 1}
    end
  end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
epoch = epoch .. '.' .. ARGV[6]
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local body = '{"k":"m","seq":' .. seq .. ',"epoch":"' .. epoch .. '",' .. ARGV[1]
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 'p', body)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[5], body)
if sent_at then
  redis.call('HSET', KEYS[3], ARGV[7], seq .. ' ' .. epoch .. ' ' .. ARGV[8] .. ' ' .. sent_at)
  redis.call('ZADD', KEYS[4], sent_at, ARGV[7])
  local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', sent_at - tonumber(ARGV[9]))
  local excess = redis.call('ZCARD', KEYS[4]) - #gone - tonumber(ARGV[10])
  if excess > 0 then
    local oldest = redis.call('ZRANGE', KEYS[4], #gone, #gone + excess - 1)
    for _, field in ipairs(oldest) do table.insert(gone, field) end
  end
  if #gone > 0 then
    redis.call('HDEL', KEYS[3], unpack(gone))
    redis.call('ZREM', KEYS[4], unpack(gone))
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[9])
  redis.call('PEXPIRE', KEYS[4], ARGV[9])
end
return {seq, epoch, 0}
"""

# The latest seq and epoch, Redis time (ms), and with a since the newest
# (seq - since) stream entries as id, body pairs, newest first.
RECOVER = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local now = redis.call('TIME')
local entries = {}
if ARGV[3] ~= '' then
  local missing = seq - tonumber(ARGV[3])
  if missing > 0 then
    for _, entry in ipairs(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', missing)) do
      table.insert(entries, entry[1])
      table.insert(entries, entry[2][2])
    end
  end
end
return {seq, epoch .. '.' .. ARGV[4], now[1] * 1000 + math.floor(now[2] / 1000), entries}
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
# Returns 1 when the node was not in the list (new, or reaped meanwhile).
HEARTBEAT = """
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
local added = redis.call('ZADD', KEYS[1], seconds, ARGV[1])
redis.call('HSET', KEYS[2], 'sessions', ARGV[2], 'last_seen', tostring(seconds))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
for i = 5, #ARGV do
  redis.call('PEXPIRE', 'chat:room:' .. ARGV[i] .. ':meta', ARGV[4])
  redis.call('PEXPIRE', 'chat:room:' .. ARGV[i] .. ':log', ARGV[4])
end
return added
"""

NODES = """
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
local cutoff = seconds - tonumber(ARGV[1])
local live = redis.call('ZRANGEBYSCORE', KEYS[1], cutoff, '+inf', 'WITHSCORES')
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff)
local found = {}
for i = 1, #live, 2 do
  local sessions = redis.call('HGET', 'chat:node:' .. live[i] .. ':info', 'sessions') or '0'
  table.insert(found, {live[i], sessions, live[i + 1]})
end
return {found, dead}
"""

# Reap a node that is still dead (or this node, leaving: ARGV[4] = '1'): its
# presence and sessions leave the shared counts; the (room, user) pairs that
# emptied are returned, for presence leave events.
REAP = """
local node = ARGV[1]
if ARGV[4] ~= '1' then
  local score = redis.call('ZSCORE', KEYS[1], node)
  local now = redis.call('TIME')
  local cutoff = tonumber(now[1]) + tonumber(now[2]) / 1000000 - tonumber(ARGV[3])
  if not score or tonumber(score) >= cutoff then return {} end
end
local presence = 'chat:node:' .. node .. ':presence'
local claims = 'chat:node:' .. node .. ':claims'
local left = {}
local fields = redis.call('HGETALL', presence)
for i = 1, #fields, 2 do
  local sep = string.find(fields[i], ARGV[2], 1, true)
  if sep then
    local room = string.sub(fields[i], 1, sep - 1)
    local user = string.sub(fields[i], sep + 1)
    local key = 'chat:room:' .. room .. ':presence'
    local before = tonumber(redis.call('HGET', key, user) or '0')
    if redis.call('HINCRBY', key, user, -tonumber(fields[i + 1])) <= 0 then
      redis.call('HDEL', key, user)
      if before > 0 then
        table.insert(left, room)
        table.insert(left, user)
      end
    end
  end
end
fields = redis.call('HGETALL', claims)
for i = 1, #fields, 2 do
  if redis.call('HINCRBY', KEYS[2], fields[i], -tonumber(fields[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[2], fields[i])
  end
end
redis.call('DEL', presence, claims, 'chat:node:' .. node .. ':info')
redis.call('ZREM', KEYS[1], node)
return left
"""

# Make this node's share match what it holds (after an outage, a reap, or a
# Redis that restarted empty): apply the differences to the shared counts.
# Returns {joined pairs, left pairs} of presence that appeared or emptied.
SYNC = """
local node = ARGV[1]
local joined, left = {}, {}
local function apply(key, member, delta)
  local before = tonumber(redis.call('HGET', key, member) or '0')
  local after = redis.call('HINCRBY', key, member, delta)
  if after <= 0 then redis.call('HDEL', key, member) end
  return before, after
end
local function sync(mine, shared_of, wanted, track)
  local have = {}
  local fields = redis.call('HGETALL', mine)
  for i = 1, #fields, 2 do have[fields[i]] = tonumber(fields[i + 1]) end
  local deltas = {}
  for field, count in pairs(wanted) do deltas[field] = count - (have[field] or 0) end
  for field, count in pairs(have) do
    if wanted[field] == nil then deltas[field] = -count end
  end
  for field, delta in pairs(deltas) do
    if delta ~= 0 then
      local key, member, room = shared_of(field)
      if key then
        local before, after = apply(key, member, delta)
        if track and before <= 0 and after > 0 then
          table.insert(joined, room); table.insert(joined, member)
        elseif track and before > 0 and after <= 0 then
          table.insert(left, room); table.insert(left, member)
        end
      end
    end
  end
  redis.call('DEL', mine)
  for field, count in pairs(wanted) do
    if count > 0 then redis.call('HSET', mine, field, count) end
  end
end
sync('chat:node:' .. node .. ':presence', function(field)
  local sep = string.find(field, ARGV[4], 1, true)
  if not sep then return nil end
  local room = string.sub(field, 1, sep - 1)
  return 'chat:room:' .. room .. ':presence', string.sub(field, sep + 1), room
end, cjson.decode(ARGV[2]), true)
sync('chat:node:' .. node .. ':claims', function(field)
  return KEYS[1], field, nil
end, cjson.decode(ARGV[3]), false)
return {joined, left}
"""

SCRIPTS = {
    "publish": PUBLISH,
    "recover": RECOVER,
    "presence_enter": PRESENCE_ENTER,
    "presence_leave": PRESENCE_LEAVE,
    "claim": CLAIM,
    "release": RELEASE,
    "heartbeat": HEARTBEAT,
    "nodes": NODES,
    "reap": REAP,
    "sync": SYNC,
}


def mask_url(url: str) -> str:
    """``url`` as ``scheme://host:port/db``: no user, password or query (``?password=``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _room(room: str) -> str:
    return f"chat:room:{room}"


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
        send_id_window: float = 0.0,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        dead_after: float = DEAD_AFTER,
    ) -> None:
        self._url = url
        self._clock = clock
        self._node = node_id
        self._history_size = history_size
        self._history_ttl = history_ttl
        self._heartbeat_interval = heartbeat_interval
        self._dead_after = dead_after
        self._room_ttl_ms = int(max(history_ttl, MIN_ROOM_TTL) * 1000)
        self._send_id_window_ms = int(send_id_window * 1000)
        self._redis: Redis | None = None
        self._listener: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._pubsub: PubSub | None = None
        self._group: TaskGroup | None = None
        self._deliver: Deliver | None = None
        self._sessions: SessionCount | None = None
        #: The Redis server's run: part of every epoch (a restart starts new runs).
        self._run = ""
        #: Rooms this node wants delivered (subscribed or to resubscribe).
        self._rooms: set[str] = set()
        #: The last (epoch, seq) handed to ``deliver`` per room, for gap filling.
        self._delivered: dict[str, tuple[str, int]] = {}
        #: Rooms being filled from their streams: live messages (and presence
        #: changes) wait here meanwhile, in arrival order.
        self._filling: dict[str, list[Publication | PresenceChange]] = {}
        self._fill_slots = anyio.Semaphore(FILL_CONCURRENCY)
        self._confirmations: dict[str, anyio.Event] = {}
        #: This node's share of presence and sessions, as it means it to be in Redis.
        self._presence: Counter[tuple[str, str]] = Counter()
        self._claims: Counter[str] = Counter()
        self._share_lock = anyio.Lock()
        self._subscribed = False
        self._commands_ok = False
        self._canary_seen: float | None = None
        self._canary_heard = False
        self._reconnect = anyio.Event()
        self._logged: str | None = None
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

    async def _call(self, command: Awaitable[T], *, uncertain: bool = False) -> T:
        """Run one command within the timeout; :class:`BrokerUnavailable` otherwise.

        A connection problem or timeout marks the broker down (and rebuilds the
        subscription); an error reply (a bug, not an outage) only fails this call.
        With ``uncertain``, a command that got no answer is reported as one that
        may still take effect (Redis runs what reached it, however late).
        """
        try:
            with anyio.fail_after(COMMAND_TIMEOUT * 2):
                result = await command
        except ResponseError as error:
            self._log_once(f"redis refused a command: {error}")
            raise BrokerUnavailable("redis refused the command") from None
        except (RedisError, OSError, TimeoutError) as error:
            self._commands_ok = False
            self.last_error = type(error).__name__
            self._reconnect.set()
            raise BrokerUnavailable(type(error).__name__, uncertain=uncertain) from None
        self._commands_ok = True
        return result

    def _log_once(self, message: str) -> None:
        """Log a problem once in a row, not on every beat of a loop."""
        if message != self._logged:
            self._logged = message
            log.error(message)

    def _client(self, *, retries: int) -> Redis:
        return Redis.from_url(
            self._url,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), retries, supported_errors=(RedisConnectionError,)),
            health_check_interval=0,
            decode_responses=True,
            client_name=f"chat-{self._node}",
        )

    # -- running ---------------------------------------------------------------

    async def run(
        self, deliver: Deliver, sessions: SessionCount, *, task_status: TaskStatus[None]
    ) -> None:
        self._deliver = deliver
        self._sessions = sessions
        # Commands get one immediate retry, on a broken connection only (a pooled
        # socket that died with a restarted Redis), never on a timeout, so a
        # frozen Redis still fails a call within the bound. The subscription
        # gets none: its loss must surface here, to resubscribe and resync.
        self._redis = self._client(retries=1)
        self._listener = self._client(retries=0)
        self._scripts = {name: self._redis.register_script(s) for name, s in SCRIPTS.items()}
        task_status.started()
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                group.start_soon(self._subscriber)
                group.start_soon(self._forever, self._canary_beat, CANARY_INTERVAL)
                group.start_soon(self._forever, self._heartbeat, self._heartbeat_interval)
        finally:
            self._group = None
            self._deliver = None
            self._subscribed = False
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await self._close_pubsub()
                # Leave the cluster now rather than wait to be reaped: release
                # whatever this node still counts, and tell the others.
                with suppress(BrokerUnavailable):
                    await self._reap_node(self._node, leaving=True)
                await self._redis.aclose()
                await self._listener.aclose()

    async def _forever(self, beat: Any, interval: float) -> None:
        """Run ``beat`` every ``interval`` seconds; nothing it raises stops the loop."""
        while True:
            try:
                await beat()
            except BrokerUnavailable:
                pass
            except Exception:
                log.exception("redis broker: %s failed", beat.__name__)
            await self._clock.sleep(interval)

    async def _subscriber(self) -> None:
        """Keep one subscription carrying every local room, whatever happens."""
        backoff = BACKOFF_FIRST
        while True:
            self._canary_heard = False
            try:
                await self._serve_subscription()
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as error:
                if self._subscribed:
                    log.warning("redis subscription lost (%s); reconnecting", type(error).__name__)
                self.last_error = type(error).__name__
            if self._canary_heard:  # it had really worked: start the backoff over
                backoff = BACKOFF_FIRST
            self._subscribed = False
            self.reconnects += 1
            await self._close_pubsub()
            await self._clock.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_CAP)

    async def _serve_subscription(self) -> None:
        assert self._redis is not None
        assert self._listener is not None
        self._reconnect = anyio.Event()
        with anyio.fail_after(COMMAND_TIMEOUT * 2):
            info = await self._redis.info("server")
        self._run = str(info.get("run_id", ""))[:8]
        pubsub = self._listener.pubsub()
        self._pubsub = pubsub
        channels = [self._canary, *(_room(room) for room in self._rooms)]
        with anyio.fail_after(COMMAND_TIMEOUT * 4):
            await pubsub.subscribe(*channels)
            pending = set(channels)
            while pending:
                message = await pubsub.get_message(timeout=COMMAND_TIMEOUT)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    pending.discard(message["channel"])
                else:
                    await self._on_message(message)
        self._subscribed = True
        self._canary_seen = self._clock.now()
        log.info("redis subscription ready: %d rooms", len(self._rooms))
        await self._resync()
        for room in list(self._rooms):
            self._start_fill(room)
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
            self._canary_heard = True
            with suppress(ValueError):
                self.canary_lag_ms = round((now - float(message["data"])) * 1000, 1)
            return
        try:
            data = orjson.loads(message["data"])
            if data.get("k") == "p":
                change = PresenceChange(data["room"], data["event"], data["user"], data["origin"])
                if change.room in self._rooms:
                    held = self._filling.get(change.room)
                    if held is not None:
                        # After the fill, in arrival order: a new run's member
                        # list comes first, and these changes apply to it.
                        held.append(change)
                    elif self._deliver is not None:
                        self._deliver(change)
                return
            publication = _publication(data)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignoring a malformed message on %s", channel)
            return
        self._hand_over(publication)

    def _hand_over(self, publication: Publication) -> None:
        """Deliver ``publication`` once, in order: a gap is filled from the stream first."""
        room = publication.room
        if room not in self._rooms:
            return
        held = self._filling.get(room)
        if held is not None:
            held.append(publication)
            return
        known = self._delivered.get(room)
        if known is not None:
            epoch, seq = known
            # (One already delivered is dropped by _deliver_now.)
            if publication.epoch != epoch or publication.seq > seq + 1:
                # Missed messages (a deaf spell), or a new run begun meanwhile:
                # the fill delivers them, and announces a new run first.
                self._start_fill(room)
                self._filling[room].append(publication)
                return
        self._deliver_now(publication)

    def _deliver_now(self, publication: Publication) -> None:
        known = self._delivered.get(publication.room)
        if known is not None and (known[0] != publication.epoch or publication.seq <= known[1]):
            # Delivered already, or of a run the fill has not announced (it will
            # deliver from its stream what this one would have been).
            return
        self._delivered[publication.room] = (publication.epoch, publication.seq)
        if self._deliver is not None:
            self._deliver(publication)

    def _start_fill(self, room: str) -> None:
        if room in self._filling or room not in self._delivered or self._group is None:
            return
        self._filling[room] = []
        self._group.start_soon(self._fill, room)

    async def _fill(self, room: str) -> None:
        """Deliver what the stream has after what this node last delivered, then what waited.

        Whatever is kept is delivered, even when the history no longer covers
        the whole gap (clients see the gap in ``seq`` and recover themselves).
        A new run of the room (Redis restarted, or the room expired) is
        announced with a :class:`RunStarted` carrying its present users first.
        """
        try:
            async with self._fill_slots:
                epoch, seq = self._delivered[room]
                _, current, kept = await self._kept_after(room, seq)
                if current != epoch:
                    latest, current, kept = await self._kept_after(room, 0)
                    users = await self.presence_users(room)
                    start = kept[0].seq - 1 if kept else latest
                    self._delivered[room] = (current, start)
                    if self._deliver is not None:
                        self._deliver(RunStarted(room, current, start, tuple(users)))
                for publication in kept:
                    self._deliver_now(publication)
        except (BrokerUnavailable, KeyError):
            pass  # what waited still goes out; the next reconnect fills again
        finally:
            for item in self._filling.pop(room, []):
                if isinstance(item, Publication):
                    self._deliver_now(item)
                elif self._deliver is not None:
                    self._deliver(item)

    async def _canary_beat(self) -> None:
        assert self._redis is not None
        await self._call(self._redis.publish(self._canary, str(self._clock.now())))
        seen = self._canary_seen
        if self._subscribed and (seen is None or self._clock.now() - seen > CANARY_DEADLINE):
            # Commands work but the subscription hears nothing: rebuild it.
            self.last_error = "canary lost"
            self._reconnect.set()

    async def _heartbeat(self) -> None:
        assert self._sessions is not None
        assert self._redis is not None
        info = await self._call(self._redis.info("server"))
        if self._subscribed and str(info.get("run_id", ""))[:8] != self._run:
            # Redis restarted under us (from a snapshot, or empty): new runs for
            # every room, and this node's share to re-assert. Start over.
            self._subscribed = False
            self.last_error = "redis restarted"
            self._reconnect.set()
            return
        added = await self._call(
            self._scripts["heartbeat"](
                keys=["chat:nodes", f"chat:node:{self._node}:info"],
                args=[
                    self._node,
                    self._sessions(),
                    int(self._dead_after * 2000),
                    self._room_ttl_ms,
                    *sorted(self._rooms),
                ],
            )
        )
        if added and self._subscribed:
            # This node was not in the list: reaped while slow, or Redis restarted.
            await self._resync()
        _, dead = await self._call(
            self._scripts["nodes"](keys=["chat:nodes"], args=[self._dead_after])
        )
        for node in dead:
            if node != self._node:
                await self._reap_node(node)

    async def _reap_node(self, node: str, *, leaving: bool = False) -> None:
        """Release a dead node's presence and sessions and announce who left."""
        left = await self._call(
            self._scripts["reap"](
                keys=["chat:nodes", "chat:sessions"],
                args=[node, SEP, self._dead_after, "1" if leaving else "0"],
            )
        )
        if left and not leaving:
            log.info("node %s stopped answering: reaped", node)
        await self._announce_pairs(left, "leave")

    async def _resync(self) -> None:
        """Make this node's share in Redis match what it holds; announce what changed."""
        async with self._share_lock:
            presence = {f"{room}{SEP}{user}": n for (room, user), n in self._presence.items()}
            joined, left = await self._call(
                self._scripts["sync"](
                    keys=["chat:sessions"],
                    args=[
                        self._node,
                        _json_object(presence),
                        _json_object(dict(self._claims)),
                        SEP,
                    ],
                )
            )
        await self._announce_pairs(joined, "join")
        await self._announce_pairs(left, "leave")

    async def _announce_pairs(self, pairs: list[str], event: Literal["join", "leave"]) -> None:
        for room, user in zip(pairs[::2], pairs[1::2], strict=True):
            await self.announce(PresenceChange(room, event, user, ""))

    # -- the broker interface ----------------------------------------------------

    async def publish(self, draft: Draft) -> Publication:
        if not self.healthy:
            raise BrokerUnavailable("broker unhealthy")
        fields = {
            "room": draft.room,
            "user": draft.user,
            "text": draft.text,
            "id": draft.id,
            "ts": draft.ts,
        }
        key = _room(draft.room)
        remembered = draft.id is not None and self._send_id_window_ms > 0
        seq, epoch, duplicate = await self._call(
            self._scripts["publish"](
                keys=[
                    f"{key}:meta",
                    f"{key}:log",
                    f"chat:sent:{draft.user}",
                    f"chat:sent-order:{draft.user}",
                ],
                args=[
                    orjson.dumps(fields).decode()[1:],
                    new_epoch(),
                    self._history_size if self._history_ttl else 0,
                    self._room_ttl_ms,
                    key,
                    self._run,
                    # The id as a field: the room first (no room holds SEP), then the id.
                    f"{draft.room}{SEP}{orjson.dumps(draft.id).decode()}" if remembered else "",
                    text_digest(draft.text) if remembered else "",
                    self._send_id_window_ms,
                    IDS_PER_USER,
                ],
            ),
            uncertain=True,
        )
        return draft.published(int(seq), str(epoch), duplicate=bool(duplicate))

    async def subscribe(self, room: str) -> None:
        pubsub = self._pubsub
        if not self.healthy or pubsub is None:
            raise BrokerUnavailable("broker unhealthy")
        channel = _room(room)
        confirmed = self._confirmations[channel] = anyio.Event()
        self._rooms.add(room)
        try:
            await self._call(pubsub.subscribe(channel))
            with anyio.fail_after(COMMAND_TIMEOUT * 2):
                await confirmed.wait()
        except BaseException as error:
            self._rooms.discard(room)
            self._confirmations.pop(channel, None)
            if isinstance(error, BrokerUnavailable | TimeoutError):
                self._reconnect.set()
                raise BrokerUnavailable("subscribe failed") from None
            raise

    async def unsubscribe(self, room: str) -> None:
        self._rooms.discard(room)
        self._delivered.pop(room, None)
        pubsub = self._pubsub
        if pubsub is not None and self._subscribed:
            await self._call(pubsub.unsubscribe(_room(room)))

    async def recover(self, room: str, since: int | None, epoch: str | None = None) -> Recovery:
        latest, current, kept = await self._kept_after(room, since)
        if room in self._rooms and room not in self._delivered:
            # The first local member's view of the room: later gaps are filled from here.
            self._delivered[room] = (current, latest)
        return recovery(latest, current, since, epoch, lambda: kept)

    async def _kept_after(self, room: str, since: int | None) -> tuple[int, str, list[Publication]]:
        """The room's latest seq and epoch, and its kept messages after ``since``, in order."""
        seq, current, now_ms, entries = await self._call(
            self._scripts["recover"](
                keys=[f"{_room(room)}:meta", f"{_room(room)}:log"],
                args=[new_epoch(), self._room_ttl_ms, "" if since is None else since, self._run],
            )
        )
        current = str(current)
        # Redis time decides what is too old: no node's clock skews it.
        horizon_ms = int(now_ms) - self._history_ttl * 1000
        kept: list[Publication] = []
        for entry_id, raw in reversed(list(zip(entries[::2], entries[1::2], strict=True))):
            publication = _publication(orjson.loads(raw))
            fresh = int(str(entry_id).partition("-")[0]) > horizon_ms
            if (
                fresh
                and publication.epoch == current
                and since is not None
                and publication.seq > since
            ):
                kept.append(publication)
        return int(seq), current, kept

    # This node's share changes, and its resync, hold one lock: a resync never
    # races a change in flight, so the share in Redis always converges on
    # the counts kept here.

    async def presence_enter(self, room: str, user: str) -> tuple[bool, list[str]]:
        async with self._share_lock:
            count, users = await self._call(
                self._scripts["presence_enter"](
                    keys=[f"{_room(room)}:presence", f"chat:node:{self._node}:presence"],
                    args=[user, f"{room}{SEP}{user}"],
                )
            )
            self._presence[room, user] += 1
        return int(count) == 1, sorted(users)

    async def presence_leave(self, room: str, user: str) -> bool:
        async with self._share_lock:
            discount(self._presence, (room, user))
            last = await self._call(
                self._scripts["presence_leave"](
                    keys=[f"{_room(room)}:presence", f"chat:node:{self._node}:presence"],
                    args=[user, f"{room}{SEP}{user}"],
                )
            )
        return bool(last)

    async def presence_users(self, room: str) -> list[str]:
        assert self._redis is not None
        users: list[str] = await self._call(self._redis.hkeys(f"{_room(room)}:presence"))  # type: ignore[arg-type]
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
        await self._call(self._redis.publish(_room(change.room), body))

    async def claim_session(self, user: str, cap: int) -> bool:
        async with self._share_lock:
            claimed = await self._call(
                self._scripts["claim"](
                    keys=["chat:sessions", f"chat:node:{self._node}:claims"], args=[user, cap]
                )
            )
            if claimed:
                self._claims[user] += 1
        return bool(claimed)

    async def release_session(self, user: str) -> None:
        async with self._share_lock:
            discount(self._claims, user)
            await self._call(
                self._scripts["release"](
                    keys=["chat:sessions", f"chat:node:{self._node}:claims"], args=[user]
                )
            )

    async def nodes(self) -> list[NodeInfo] | None:
        live, _ = await self._call(
            self._scripts["nodes"](keys=["chat:nodes"], args=[self._dead_after])
        )
        return [NodeInfo(node, int(sessions), float(seen)) for node, sessions, seen in live]


def _json_object(mapping: dict[str, int]) -> str:
    # cjson turns an empty JSON object into an empty Lua table, like an array:
    # both iterate as nothing, which is what an empty share means.
    return orjson.dumps(mapping).decode()


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
