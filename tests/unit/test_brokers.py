"""The broker contract, run against every broker: memory, and Redis (a real redis-server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from chat.brokers import Broker, BrokerUnavailable, Draft, open_broker
from chat.brokers.redis import RedisBroker
from chat.clock import Clock, MonotonicClock
from chat.envelope import DisconnectCommand, HistoryPage, PresenceChange, Publication, RunStarted
from chat.settings import Settings
from tests.clock import FakeClock
from tests.redis_server import RedisServer
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

HISTORY_SIZE = 5
#: Seconds a send's id is remembered (short: a test waits it out for real with Redis).
SEND_ID_WINDOW = 0.5

#: A room of the tests' own: what is published (or announced) to it after an
#: action arrives after everything the action delivered, so a test waits for it
#: instead of sleeping. The delivered lists below leave it out.
SENTINEL = "sentinel"


@dataclass
class Running:
    broker: Broker
    clock: Clock
    delivered: list[Publication | PresenceChange | RunStarted] = field(default_factory=list)
    #: The commands this node applied, and how many sessions each "closes" here.
    applied: list[DisconnectCommand] = field(default_factory=list)
    closes: int = 1

    def apply(self, command: DisconnectCommand) -> int:
        self.applied.append(command)
        return self.closes

    def messages(self, room: str | None = None) -> list[Publication]:
        return [
            p
            for p in self.delivered
            if isinstance(p, Publication)
            and p.room != SENTINEL
            and (room is None or p.room == room)
        ]

    def changes(self) -> list[PresenceChange]:
        return [p for p in self.delivered if isinstance(p, PresenceChange) and p.room != SENTINEL]

    async def publish(
        self, room: str, text: str, id: str | None = None, *, user: str = "u"
    ) -> Publication:
        draft = Draft(room=room, user=user, text=text, id=id, ts=self.clock.time())
        return await self.broker.publish(draft)

    async def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass on this broker's clock (Redis keeps its own time: real)."""
        if isinstance(self.clock, FakeClock):
            await self.clock.advance(seconds)
        else:
            await anyio.sleep(seconds)

    async def delivered_so_far(self, *, presence: bool = False) -> None:
        """Return once everything published or announced before this call was delivered.

        Sends a sentinel (a publication, or a presence change) to the sentinel
        room and waits until it comes back: the memory broker delivers at once,
        and Redis delivers in order on this node's one pub/sub connection.
        """
        await self.broker.subscribe(SENTINEL)
        if presence:
            await self.broker.announce(PresenceChange(SENTINEL, "join", SENTINEL, SENTINEL))
        else:
            await self.publish(SENTINEL, SENTINEL)
        kind = PresenceChange if presence else Publication
        assert await eventually(
            lambda: any(isinstance(p, kind) and p.room == SENTINEL for p in self.delivered)
        )


Factory = Callable[[], Any]


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest) -> Callable[[str], Running]:
    """Build a broker of the parameter's kind (``node`` names it, for Redis)."""
    if request.param == "memory":
        clock = FakeClock()
        shared: dict[str, Broker] = {}

        def memory(node: str) -> Running:
            broker = shared.setdefault(
                "only",
                open_broker(
                    Settings(history_size=HISTORY_SIZE, send_id_window=SEND_ID_WINDOW), clock
                ),
            )
            return Running(broker, clock)

        return memory
    server: RedisServer = request.getfixturevalue("fresh_redis")
    return lambda node: redis_node(server, node)


def redis_node(server: RedisServer, node: str) -> Running:
    """A Redis broker named ``node`` on ``server``, quick to beat and to reap."""
    broker = RedisBroker(
        server.url,
        MonotonicClock(),
        node_id=node,
        history_size=HISTORY_SIZE,
        history_ttl=300,
        send_id_window=SEND_ID_WINDOW,
        heartbeat_interval=0.1,
        dead_after=0.5,
    )
    return Running(broker, MonotonicClock())


@asynccontextmanager
async def running(run: Running) -> AsyncIterator[Running]:
    async with anyio.create_task_group() as group:
        await group.start(
            lambda *, task_status: run.broker.run(
                run.delivered.append,
                lambda: 1,
                task_status=task_status,
                apply=run.apply,
            )
        )
        with anyio.fail_after(5):
            while not run.broker.healthy:
                await anyio.sleep(0.01)
        yield run
        group.cancel_scope.cancel()


async def test_publish_assigns_seq_rising_by_one_per_room(make: Callable[[str], Running]) -> None:
    async with running(make("a")) as r:
        seqs = [(await r.publish(room, "x")).seq for room in ["a", "a", "b", "a"]]
        assert seqs == [1, 2, 1, 3]
        assert (await r.broker.recover("a", None)).latest == 3
        assert (await r.broker.recover("never", None)).latest == 0


async def test_subscribed_rooms_are_delivered_once_each_in_seq_order(
    make: Callable[[str], Running],
) -> None:
    async with running(make("a")) as r:
        await r.broker.subscribe("a")
        for n in range(5):
            await r.publish("a", str(n))
        await r.publish("b", "not subscribed")
        await r.delivered_so_far()
        assert [(p.room, p.seq, p.text) for p in r.messages()] == [
            ("a", n + 1, str(n)) for n in range(5)
        ]


async def test_nothing_is_delivered_after_unsubscribe(make: Callable[[str], Running]) -> None:
    async with running(make("a")) as r:
        await r.broker.subscribe("a")
        await r.broker.unsubscribe("a")
        await r.publish("a", "x")
        await r.delivered_so_far()
        assert r.messages() == []


@pytest.mark.parametrize(
    ("since", "complete", "replayed"),
    [(None, False, 0), (8, True, 0), (7, True, 1), (3, True, 5), (2, False, 0), (9, False, 0)],
)
async def test_recovery_is_complete_only_when_the_history_covers_the_gap(
    make: Callable[[str], Running], since: int | None, complete: bool, replayed: int
) -> None:
    async with running(make("a")) as r:
        published = [await r.publish("a", str(n)) for n in range(8)]  # history keeps 4..8
        recovery = await r.broker.recover("a", since)
        assert (recovery.latest, recovery.complete) == (8, complete)
        expected = tuple(published[8 - replayed :]) if replayed else ()
        assert recovery.publications == expected
        assert recovery.epoch == published[0].epoch


async def test_recovery_from_another_run_of_the_room_is_not_complete(
    make: Callable[[str], Running],
) -> None:
    async with running(make("a")) as r:
        first = await r.publish("a", "x")
        assert (await r.broker.recover("a", 0, first.epoch)).complete
        assert not (await r.broker.recover("a", 0, "another-run")).complete


async def test_a_room_keeps_its_seq_and_epoch_across_an_empty_spell(
    make: Callable[[str], Running],
) -> None:
    async with running(make("a")) as r:
        await r.broker.subscribe("a")
        first = await r.publish("a", "x")
        await r.broker.unsubscribe("a")
        await r.broker.subscribe("a")
        second = await r.publish("a", "y")
        assert (second.seq, second.epoch) == (2, first.epoch)


async def test_a_retried_send_gets_the_first_seq_and_publishes_nothing(
    make: Callable[[str], Running],
) -> None:
    async with running(make("a")) as r:
        await r.broker.subscribe("a")
        first = await r.publish("a", "hello", "m-1")
        again = await r.publish("a", "hello", "m-1")
        assert (again.seq, again.epoch, again.duplicate) == (first.seq, first.epoch, True)
        assert not first.duplicate
        await r.delivered_so_far()
        assert [p.text for p in r.messages("a")] == ["hello"]
        assert (await r.broker.recover("a", None)).latest == 1


async def test_a_reused_id_with_another_text_room_or_user_is_a_new_message(
    make: Callable[[str], Running],
) -> None:
    async with running(make("a")) as r:
        first = await r.publish("a", "hello", "m-1")
        others = [
            await r.publish("a", "hello again", "m-1"),
            await r.publish("b", "hello", "m-1"),
            await r.publish("a", "hello", "m-1", user="someone-else"),
            await r.publish("a", "hello", "m-2"),
            await r.publish("a", "hello", None),
            await r.publish("a", "hello", None),
        ]
        assert not any(p.duplicate for p in others)
        assert [first.seq, *(p.seq for p in others)] == [1, 2, 1, 3, 4, 5, 6]
        # Only the latest text of a reused id is a retry from then on.
        assert (await r.publish("a", "hello again", "m-1")).seq == 2
        assert not (await r.publish("a", "hello", "m-1")).duplicate


async def test_an_id_is_forgotten_after_the_window(make: Callable[[str], Running]) -> None:
    async with running(make("a")) as r:
        first = await r.publish("a", "hello", "m-1")
        await r.wait(SEND_ID_WINDOW + 0.2)
        later = await r.publish("a", "hello", "m-1")
        assert (later.seq, later.duplicate) == (first.seq + 1, False)


async def test_presence_counts_sessions_per_user(make: Callable[[str], Running]) -> None:
    async with running(make("a")) as r:
        assert await r.broker.presence_enter("room", "ann") == (True, ["ann"])
        assert await r.broker.presence_enter("room", "ann") == (False, ["ann"])
        first, users = await r.broker.presence_enter("room", "bo")
        assert first
        assert sorted(users) == ["ann", "bo"]
        assert await r.broker.presence_enter("other", "ann") == (True, ["ann"])
        assert await r.broker.presence_leave("room", "ann") is False
        assert await r.broker.presence_leave("room", "ann") is True
        assert await r.broker.presence_users("room") == ["bo"]


async def test_presence_changes_reach_subscribed_rooms(make: Callable[[str], Running]) -> None:
    async with running(make("a")) as r:
        await r.broker.subscribe("room")
        change = PresenceChange("room", "join", "ann", "s1")
        await r.broker.announce(change)
        await r.broker.announce(PresenceChange("elsewhere", "join", "bo", "s2"))
        await r.delivered_so_far(presence=True)
        assert r.changes() == [change]


async def test_session_claims_respect_the_cap(make: Callable[[str], Running]) -> None:
    async with running(make("a")) as r:
        assert await r.broker.claim_session("ann", 2)
        assert await r.broker.claim_session("ann", 2)
        assert not await r.broker.claim_session("ann", 2)
        assert await r.broker.claim_session("ann", 0)  # no cap
        await r.broker.release_session("ann")
        await r.broker.release_session("ann")
        assert await r.broker.claim_session("ann", 2)


# -- Redis: several nodes on one Redis -------------------------------------------


@pytest.fixture
def two(fresh_redis: RedisServer) -> tuple[Running, Running]:
    return redis_node(fresh_redis, "node-a"), redis_node(fresh_redis, "node-b")


async def test_nodes_on_one_redis_share_rooms_presence_caps_and_the_node_list(
    two: tuple[Running, Running],
) -> None:
    a, b = two
    async with running(a), running(b):
        await a.broker.subscribe("room")
        await b.broker.subscribe("room")
        await a.publish("room", "from a")
        await b.publish("room", "from b")
        assert await eventually(lambda: len(a.messages()) == 2 and len(b.messages()) == 2)
        assert [(p.seq, p.text) for p in a.messages()] == [(p.seq, p.text) for p in b.messages()]
        assert (await a.broker.presence_enter("room", "ann"))[0]
        assert not (await b.broker.presence_enter("room", "ann"))[0]
        assert await b.broker.presence_users("room") == ["ann"]
        assert await a.broker.claim_session("ann", 2)
        assert await b.broker.claim_session("ann", 2)
        assert not await a.broker.claim_session("ann", 2)
        nodes = await a.broker.nodes()
        assert nodes is not None
        assert sorted(n.node for n in nodes) == ["node-a", "node-b"]


async def test_a_retry_is_recognised_on_another_node(two: tuple[Running, Running]) -> None:
    a, b = two
    async with running(a), running(b):
        await b.broker.subscribe("room")
        first = await a.publish("room", "once", "m-1", user="ann")
        again = await b.publish("room", "once", "m-1", user="ann")
        assert (again.seq, again.duplicate) == (first.seq, True)
        await b.delivered_so_far()
        assert [p.text for p in b.messages("room")] == ["once"]


async def test_a_node_that_stops_releases_what_it_held(two: tuple[Running, Running]) -> None:
    a, b = two
    async with running(a):
        await a.broker.subscribe("room")
        async with running(b):
            await b.broker.presence_enter("room", "leaver")
            assert await b.broker.claim_session("leaver", 1)
        assert await eventually(lambda: bool(a.changes()))
        assert a.changes() == [PresenceChange("room", "leave", "leaver", "")]
        assert await a.broker.presence_users("room") == []
        assert await a.broker.claim_session("leaver", 1)
        nodes = await a.broker.nodes()
        assert [n.node for n in nodes or []] == ["node-a"]


async def test_a_node_that_died_is_reaped_by_the_others(
    two: tuple[Running, Running], fresh_redis: RedisServer
) -> None:
    a, _ = two
    async with running(a):
        await a.broker.subscribe("room")
        # What a node killed mid-flight leaves behind: its share, its stale heartbeat.
        fresh_redis.command("ZADD", "chat:nodes", 1, "node-dead")
        fresh_redis.command("HSET", "chat:node:node-dead:presence", "room\x1fghost", 2)
        fresh_redis.command("HSET", "chat:room:room:presence", "ghost", 2, "alive", 1)
        fresh_redis.command("HSET", "chat:node:node-dead:claims", "ghost", 2)
        fresh_redis.command("HSET", "chat:sessions", "ghost", 2)
        assert await eventually(lambda: bool(a.changes()))
        assert a.changes() == [PresenceChange("room", "leave", "ghost", "")]
        assert await a.broker.presence_users("room") == ["alive"]
        assert await a.broker.claim_session("ghost", 1)
        assert fresh_redis.command("EXISTS", "chat:node:node-dead:presence") == 0
        nodes = await a.broker.nodes()
        assert [n.node for n in nodes or []] == ["node-a"]


def test_the_redis_url_is_shown_without_any_credential() -> None:
    from chat.brokers.redis import mask_url

    assert mask_url("redis://user:pw@cache:6380/2") == "redis://cache:6380/2"
    assert mask_url("redis://cache/0?password=pw&username=u") == "redis://cache/0"
    assert mask_url("rediss://:pw@cache") == "rediss://cache"


async def test_rooms_named_like_key_parts_do_not_collide(
    two: tuple[Running, Running],
) -> None:
    a, _ = two
    async with running(a):
        for room in ["presence", "log", "meta", "node", "sessions", "room"]:
            await a.broker.subscribe(room)
            assert (await a.publish(room, room)).seq == 1
            first, users = await a.broker.presence_enter(room, "seq")
            assert (first, users) == (True, ["seq"])
        for room in ["presence", "log", "meta", "node", "sessions", "room"]:
            recovery = await a.broker.recover(room, 0)
            assert [p.text for p in recovery.publications] == [room]
        assert a.broker.healthy


async def test_an_error_reply_fails_the_call_but_is_no_outage(
    two: tuple[Running, Running], fresh_redis: RedisServer
) -> None:
    a, _ = two
    async with running(a):
        fresh_redis.command("SET", "chat:room:broken:meta", "not a hash")
        with pytest.raises(BrokerUnavailable):
            await a.publish("broken", "x")
        assert a.broker.healthy
        assert (await a.publish("fine", "x")).seq == 1


def resubscribed(a: Running, b: Running | None, before: tuple[int, int]) -> bool:
    """Both brokers noticed the restart, reconnected and are healthy again."""
    brokers = [(a, before[0])] + ([(b, before[1])] if b is not None else [])
    return all(
        r.broker.healthy and r.broker.reconnects > n  # type: ignore[attr-defined]
        for r, n in brokers
    )


async def test_a_redis_restarted_from_an_older_snapshot_starts_new_runs(
    two: tuple[Running, Running], fresh_redis: RedisServer
) -> None:
    a, b = two
    async with running(a), running(b):
        await b.broker.subscribe("room")
        old = [await a.publish("room", f"old {n}") for n in range(3)]
        fresh_redis.command("SAVE")
        for n in range(3):
            await a.publish("room", f"lost {n}")
        assert await eventually(lambda: len(b.messages()) == 6)
        reconnects = a.broker.reconnects, b.broker.reconnects  # type: ignore[attr-defined]
        fresh_redis.kill()
        fresh_redis.start(keep_data=True)  # loads the snapshot: seq is back at 3
        assert await eventually(lambda: resubscribed(a, b, reconnects), timeout=10)
        after = await a.publish("room", "after the restart")
        assert after.seq == 4
        assert after.epoch != old[0].epoch
        assert await eventually(lambda: b.messages()[-1].text == "after the restart")
        recovery = await a.broker.recover("room", 3, old[0].epoch)
        assert not recovery.complete


async def test_messages_of_a_new_run_published_before_a_node_resubscribed_are_delivered(
    two: tuple[Running, Running], fresh_redis: RedisServer
) -> None:
    a, b = two
    async with running(a), running(b):
        await b.broker.subscribe("room")
        await a.publish("room", "before")
        assert await eventually(lambda: len(b.messages()) == 1)
        reconnects = a.broker.reconnects, b.broker.reconnects  # type: ignore[attr-defined]
        fresh_redis.kill()
        fresh_redis.start()  # empty: every room starts a new run
        assert await eventually(lambda: resubscribed(a, None, reconnects), timeout=10)
        # b may not have resubscribed yet: publish straight away.
        for n in range(3):
            await a.publish("room", f"new {n}")
        assert await eventually(lambda: len(b.messages()) == 4, timeout=10)
        assert [p.text for p in b.messages()] == ["before", "new 0", "new 1", "new 2"]
        assert [p.seq for p in b.messages()[1:]] == [1, 2, 3]
        # The new run was announced before its first message, its seq counted from 0.
        announced = [d for d in b.delivered if isinstance(d, RunStarted)]
        new_epoch = b.messages()[1].epoch
        assert announced == [RunStarted("room", new_epoch, 0, ())]
        assert b.delivered.index(announced[0]) < b.delivered.index(b.messages()[1])


async def test_a_node_reaped_while_alive_announces_its_users_again(
    two: tuple[Running, Running], fresh_redis: RedisServer
) -> None:
    a, b = two
    async with running(a), running(b):
        await a.broker.subscribe("room")
        await b.broker.presence_enter("room", "bob")
        # b looks dead for a moment (a stall): a reaps it, b comes back.
        fresh_redis.command("ZADD", "chat:nodes", 1, "node-b")
        assert await eventually(lambda: len(a.changes()) == 2, timeout=5)
        assert [(c.event, c.user) for c in a.changes()] == [("leave", "bob"), ("join", "bob")]
        assert await a.broker.presence_users("room") == ["bob"]


async def test_latest_reads_a_rooms_run_without_starting_one(
    make: Callable[[str], Running],
) -> None:
    async with running(make("a")) as r:
        assert await r.broker.latest("quiet") is None
        assert await r.broker.latest("quiet") is None  # asking did not start a run
        first = await r.publish("quiet", "x")
        await r.publish("quiet", "y")
        assert await r.broker.latest("quiet") == (first.epoch, 2)


async def test_a_reap_reads_a_share_that_changed_under_it_again(fresh_redis: RedisServer) -> None:
    from chat.brokers.redis.link import Link
    from chat.brokers.redis.shares import Shares

    fresh_redis.command("ZADD", "chat:nodes", 1, "node-dead")
    fresh_redis.command("HSET", "chat:node:node-dead:presence", "one\x1fann", 1)
    fresh_redis.command("HSET", "chat:room:one:presence", "ann", 1)
    link = Link(fresh_redis.url, "node-a")
    shares = Shares(link, "node-a", dead_after=0.5)
    read = shares._rooms_of

    async def read_then_the_share_grows(node: str) -> set[str]:
        rooms = await read(node)
        if "two" not in rooms:
            # The dead node's last enter lands between the read and the reap.
            fresh_redis.command("HSET", "chat:node:node-dead:presence", "two\x1fbob", 1)
            fresh_redis.command("HSET", "chat:room:two:presence", "bob", 1)
        return rooms

    shares._rooms_of = read_then_the_share_grows  # type: ignore[method-assign]
    try:
        left = await shares.reap("node-dead")
    finally:
        await link.aclose()
    assert sorted((c.room, c.user) for c in left) == [("one", "ann"), ("two", "bob")]
    assert fresh_redis.command("HLEN", "chat:room:two:presence") == 0
    assert fresh_redis.command("EXISTS", "chat:node:node-dead:presence") == 0


# -- the server API's reads and commands -------------------------------------------


async def test_reading_a_room_without_a_run_starts_none(make: Callable[[str], Running]) -> None:
    async with running(make("a")) as r:
        assert await r.broker.read("quiet", 0, 10) == HistoryPage(0, None, complete=True)
        assert await r.broker.read("quiet", 3, 10) == HistoryPage(0, None, complete=False)
        assert await r.broker.read("quiet", 0, 10, "some-run") == HistoryPage(0, None)
        assert await r.broker.latest("quiet") is None


@pytest.mark.parametrize(
    ("since", "limit", "texts", "complete", "more"),
    [
        (8, 10, [], True, False),  # nothing after since
        (6, 10, ["6", "7"], True, False),
        (3, 10, ["3", "4", "5", "6", "7"], True, False),  # the oldest kept is 4
        (3, 2, ["3", "4"], True, True),
        (0, 10, ["3", "4", "5", "6", "7"], False, False),  # 1..3 were dropped
        (1, 1, ["3"], False, True),
        (9, 10, [], False, False),  # ahead of the room
    ],
)
async def test_reading_history_gives_what_is_kept_after_since_and_whether_it_covers_it(
    make: Callable[[str], Running],
    since: int,
    limit: int,
    texts: list[str],
    complete: bool,
    more: bool,
) -> None:
    async with running(make("a")) as r:
        published = [await r.publish("a", str(n)) for n in range(8)]  # history keeps 4..8
        page = await r.broker.read("a", since, limit)
        assert [p.text for p in page.publications] == texts
        assert [p.seq for p in page.publications] == [int(t) + 1 for t in texts]
        assert (page.latest, page.epoch) == (8, published[0].epoch)
        assert (page.complete, page.more) == (complete, more)
        assert page.publications == tuple(p for p in published if p.text in texts)


async def test_reading_history_of_another_run_is_not_complete(
    make: Callable[[str], Running],
) -> None:
    async with running(make("a")) as r:
        first = await r.publish("a", "x")
        assert (await r.broker.read("a", 0, 10, first.epoch)).complete
        other = await r.broker.read("a", 0, 10, "another-run")
        assert not other.complete
        assert [p.text for p in other.publications] == ["x"]


async def test_presence_counts_give_sessions_per_user(make: Callable[[str], Running]) -> None:
    async with running(make("a")) as r:
        assert await r.broker.presence_counts("room") == {}
        await r.broker.presence_enter("room", "ann")
        await r.broker.presence_enter("room", "ann")
        await r.broker.presence_enter("room", "bo")
        await r.broker.presence_enter("other", "cy")
        assert await r.broker.presence_counts("room") == {"ann": 2, "bo": 1}
        await r.broker.presence_leave("room", "bo")
        assert await r.broker.presence_counts("room") == {"ann": 2}


async def test_a_disconnect_command_is_applied_on_this_node(make: Callable[[str], Running]) -> None:
    node = make("a")
    node.closes = 2
    async with running(node) as r:
        command = DisconnectCommand(session=None, user="ann", detail="bye now", reconnect=True)
        tally = await r.broker.disconnect(command)
        assert (tally.here, dict(tally.others), tally.unanswered) == (2, {}, ())
        assert r.applied == [command]


async def test_a_disconnect_command_reaches_every_node_and_is_counted(
    two: tuple[Running, Running],
) -> None:
    a, b = two
    b.closes = 3
    async with running(a), running(b):
        command = DisconnectCommand(session="s1", user=None, detail="", reconnect=False)
        tally = await a.broker.disconnect(command)
        assert (tally.here, dict(tally.others), tally.unanswered) == (1, {"node-b": 3}, ())
        assert a.applied == b.applied == [command]


async def test_a_live_node_that_does_not_answer_is_named(
    two: tuple[Running, Running], fresh_redis: RedisServer
) -> None:
    a, _ = two
    async with running(a):
        # A node in the list, beating, that never heard the command (its control
        # connection is down, say).
        seconds, micros = fresh_redis.command("TIME")
        fresh_redis.command("ZADD", "chat:nodes", f"{seconds}.{micros}", "node-deaf")
        tally = await a.broker.disconnect(DisconnectCommand(None, "ann", "", False))
        assert (tally.here, dict(tally.others), tally.unanswered) == (1, {}, ("node-deaf",))


async def test_a_disconnect_is_refused_before_the_control_channel_listens(
    fresh_redis: RedisServer,
) -> None:
    idle = redis_node(fresh_redis, "node-a")  # not running: it hears nothing
    with pytest.raises(BrokerUnavailable) as refused:
        await idle.broker.disconnect(DisconnectCommand(None, "ann", "", False))
    assert not refused.value.uncertain
    assert idle.applied == []


async def test_publish_many_publishes_in_order_as_one_by_one_would(
    make: Callable[[str], Running],
) -> None:
    async with running(make("a")) as r:
        await r.broker.subscribe("a")
        first = await r.publish("a", "before", "m-0")
        drafts = [
            Draft(room, "u", text, frame_id, r.clock.time())
            for room, text, frame_id in [
                ("a", "one", "m-1"),
                ("b", "other room", None),
                ("a", "before", "m-0"),  # a retry of one published before
                ("a", "two", "m-1"),  # the same id, another text: a new message
                ("a", "one", "m-1"),  # a new message too: the id's latest text is "two"
            ]
        ]
        found = await r.broker.publish_many(drafts)
        assert all(isinstance(p, Publication) for p in found)
        assert [(p.room, p.seq, p.duplicate) for p in found if isinstance(p, Publication)] == [
            ("a", 2, False),
            ("b", 1, False),
            ("a", 1, True),
            ("a", 3, False),
            ("a", 4, False),
        ]
        assert {p.epoch for p in found if isinstance(p, Publication) and p.room == "a"} == {
            first.epoch
        }
        await r.delivered_so_far()
        assert [(p.seq, p.text) for p in r.messages("a")] == [
            (1, "before"),
            (2, "one"),
            (3, "two"),
            (4, "one"),
        ]
        assert await r.broker.publish_many([]) == []


async def test_publish_many_after_redis_forgot_its_scripts_loads_them_again(
    fresh_redis: RedisServer,
) -> None:
    async with running(redis_node(fresh_redis, "a")) as r:
        await r.publish("a", "x")
        fresh_redis.command("SCRIPT", "FLUSH")
        drafts = [Draft("a", "u", str(n), None, 0.0) for n in range(3)]
        found = await r.broker.publish_many(drafts)
        assert [p.seq for p in found if isinstance(p, Publication)] == [2, 3, 4]


async def test_publish_many_during_an_outage_refuses_every_draft(
    own_redis: RedisServer,
) -> None:
    async with running(redis_node(own_redis, "a")) as r:
        own_redis.kill()
        drafts = [Draft("a", "u", str(n), None, 0.0) for n in range(3)]
        with anyio.fail_after(3):
            found = await r.broker.publish_many(drafts)
        assert len(found) == 3
        assert all(isinstance(p, BrokerUnavailable) for p in found)


async def test_an_error_reply_fails_only_its_draft_of_a_batch(
    two: tuple[Running, Running], fresh_redis: RedisServer
) -> None:
    a, _ = two
    async with running(a):
        fresh_redis.command("SET", "chat:room:broken:meta", "not a hash")
        drafts = [Draft(room, "u", "x", None, 0.0) for room in ["fine", "broken", "fine"]]
        found = await a.broker.publish_many(drafts)
        assert isinstance(found[1], BrokerUnavailable)
        assert [p.seq for p in found if isinstance(p, Publication)] == [1, 2]
        assert a.broker.healthy


@pytest.mark.parametrize(
    ("session", "user", "valid"),
    [("s1", None, True), (None, "bob", True), (None, None, False), ("s1", "bob", False)],
)
def test_a_disconnect_command_names_exactly_one_target(
    session: str | None, user: str | None, valid: bool
) -> None:
    from chat.brokers.redis.control import _parse

    command = {"k": "d", "ask": "x", "from": "node-a", "detail": "", "reconnect": False}
    raw = orjson.dumps({**command, "session": session, "user": user})
    assert (_parse(raw) is not None) == valid


@asynccontextmanager
async def reply_dropping_proxy(server: RedisServer, marker: bytes) -> AsyncIterator[str]:
    """A TCP proxy to ``server`` that passes everything, except that the connection
    whose command holds ``marker`` loses Redis's reply to it and is cut: the command
    ran, and its sender cannot know. Yields the proxy's URL."""
    import asyncio

    tasks: set[asyncio.Task[None]] = set()

    async def pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, cut: list[bool], up: bool
    ) -> None:
        try:
            while chunk := await source.read(65536):
                if up and marker in chunk:
                    cut.append(True)
                elif not up and cut:
                    sink.transport.abort()  # the reply is lost with the connection
                    return
                sink.write(chunk)
                await sink.drain()
        except OSError:
            pass
        finally:
            sink.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = server.url.removeprefix("redis://").split("/")[0].split(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        cut: list[bool] = []
        for task in (
            pump(reader, upstream_writer, cut, True),
            pump(upstream_reader, writer, cut, False),
        ):
            tasks.add(asyncio.ensure_future(task))

    proxy = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proxy.close()
        for task in tasks:
            task.cancel()


@pytest.mark.parametrize("burst", [1, 3])
async def test_a_publish_whose_reply_is_lost_is_uncertain_and_never_run_twice(
    fresh_redis: RedisServer, burst: int
) -> None:
    async with reply_dropping_proxy(fresh_redis, b"lost-reply") as url:
        broker = RedisBroker(
            url,
            MonotonicClock(),
            node_id="node-a",
            history_size=HISTORY_SIZE,
            history_ttl=300,
            send_id_window=SEND_ID_WINDOW,
        )
        async with running(Running(broker, MonotonicClock())) as r:
            await r.publish("room", "first")  # Redis knows the script now
            drafts = [Draft("room", "u", f"lost-reply {n}", None, 0.0) for n in range(burst)]
            found = await r.broker.publish_many(drafts)
    assert [(type(f), getattr(f, "uncertain", None)) for f in found] == [
        (BrokerUnavailable, True)
    ] * burst
    # Redis ran the burst once: a retry would have published it again.
    assert fresh_redis.command("HGET", "chat:room:room:meta", "seq") == str(1 + burst)


async def test_messages_read_together_are_handed_over_together_in_order(
    fresh_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages that arrive in one read: the feed hands them all over after one
    ``get_message`` (the rest drained from what hiredis holds), in order, once each."""
    reads = 0
    get_message = PubSub.get_message

    async def counted(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        message = await get_message(self, *args, **kwargs)
        if message is not None and message["type"] == "message":
            reads += 1
        return message

    monkeypatch.setattr(PubSub, "get_message", counted)
    async with running(redis_node(fresh_redis, "a")) as r, Redis.from_url(fresh_redis.url) as raw:
        await r.broker.subscribe("a")
        await r.broker.subscribe("b")
        reads = 0
        async with raw.pipeline(transaction=False) as pipe:  # 60 PUBLISH back to back
            for n in range(60):
                room, seq = "ab"[n % 2], n // 2 + 1
                body = {"k": "m", "room": room, "seq": seq, "epoch": "e", "user": "u"}
                pipe.publish(f"chat:room:{room}", orjson.dumps({**body, "text": str(n), "ts": 0}))
            await pipe.execute()
        await r.delivered_so_far()
        assert [p.text for p in r.messages("a")] == [str(n) for n in range(0, 60, 2)]
        assert [p.seq for p in r.messages("b")] == list(range(1, 31))
        assert reads < 30  # drained, not read one by one (the sentinel's read included)
        await r.broker.subscribe("c")  # a confirmation still reaches the subscriber
        await r.publish("c", "after")
        await r.delivered_so_far()
        assert [p.text for p in r.messages("c")] == ["after"]


async def test_publishes_of_one_turn_share_one_round_trip_and_one_message_per_room(
    fresh_redis: RedisServer,
) -> None:
    """Sessions that publish in the same turn of the event loop go to Redis in one
    script call: each gets its own drafts' outcomes, in its order, and each room's
    messages reach the subscribers as one pub/sub message, in seq order."""
    async with running(redis_node(fresh_redis, "a")) as r, Redis.from_url(fresh_redis.url) as raw:
        listener = raw.pubsub()
        await listener.subscribe("chat:room:a", "chat:room:b")
        found: dict[str, list[Publication | BrokerUnavailable]] = {}

        async def burst(who: str, rooms: str) -> None:
            drafts = [Draft(room, who, f"{who}{n}", None, 0.0) for n, room in enumerate(rooms)]
            found[who] = await r.broker.publish_many(drafts)

        async def one(who: str) -> None:
            found[who] = [await r.broker.publish(Draft("a", who, who, None, 0.0))]

        async with anyio.create_task_group() as group:
            group.start_soon(burst, "x", "aab")
            group.start_soon(one, "y")
            group.start_soon(burst, "z", "ba")
        texts = {
            who: [(p.room, p.seq, p.text) for p in outcomes if isinstance(p, Publication)]
            for who, outcomes in found.items()
        }
        assert texts == {  # Redis ran them in the callers' order
            "x": [("a", 1, "x0"), ("a", 2, "x1"), ("b", 1, "x2")],
            "y": [("a", 3, "y")],
            "z": [("b", 2, "z0"), ("a", 4, "z1")],
        }
        heard: list[tuple[bytes, Any]] = []
        with anyio.fail_after(2):
            while len(heard) < 2:
                message = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None:
                    heard.append((message["channel"], orjson.loads(message["data"])))
        assert [(channel, [m["text"] for m in data]) for channel, data in heard] == [
            (b"chat:room:a", ["x0", "x1", "y", "z1"]),
            (b"chat:room:b", ["x2", "z0"]),
        ]
        assert await listener.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
        await listener.aclose()  # type: ignore[no-untyped-call]


async def test_a_caller_cancelled_while_it_leads_a_round_trip_does_not_fail_the_others(
    fresh_redis: RedisServer,
) -> None:
    async with running(redis_node(fresh_redis, "a")) as r:
        found: list[Publication | BrokerUnavailable] = []

        async def other() -> None:
            found.extend(await r.broker.publish_many([Draft("a", "u", "kept", None, 0.0)]))

        with anyio.fail_after(3):  # the others would wait forever for the cancelled one
            async with anyio.create_task_group() as group:
                with anyio.CancelScope() as leader:
                    group.start_soon(other)
                    leader.cancel()
                    await r.broker.publish_many([Draft("a", "u", "first", None, 0.0)])
        assert [(p.seq, p.text) for p in found if isinstance(p, Publication)] == [(2, "kept")]
        assert (await r.broker.recover("a", 0)).publications[0].text == "first"


async def test_publishes_of_one_turn_during_an_outage_are_all_refused_in_time(
    own_redis: RedisServer,
) -> None:
    async with running(redis_node(own_redis, "a")) as r:
        own_redis.kill()
        found: list[Publication | BrokerUnavailable] = []

        async def burst(n: int) -> None:
            found.extend(await r.broker.publish_many([Draft("a", "u", str(n), None, 0.0)] * n))

        with anyio.fail_after(3):
            async with anyio.create_task_group() as group:
                for n in (1, 2, 3):
                    group.start_soon(burst, n)
        assert len(found) == 6
        assert all(isinstance(p, BrokerUnavailable) for p in found)
