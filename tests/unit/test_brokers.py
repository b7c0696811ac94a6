"""The broker contract, run against every broker (only memory:// exists so far)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest

from chat.brokers import Broker, Draft, Publication, open_broker
from chat.clock import FakeClock
from chat.envelope import NodeState, PresenceChange
from chat.settings import Settings

pytestmark = pytest.mark.anyio

HISTORY_SIZE = 5
HISTORY_TTL = 60.0


@dataclass
class Running:
    broker: Broker
    clock: FakeClock
    delivered: list[Publication | PresenceChange]


def memory(clock: FakeClock) -> Broker:
    settings = Settings(history_size=HISTORY_SIZE, history_ttl=HISTORY_TTL)
    return open_broker(settings, clock)


BROKERS: dict[str, Callable[[FakeClock], Broker]] = {"memory": memory}


@pytest.fixture(params=sorted(BROKERS))
def make_broker(request: pytest.FixtureRequest) -> Callable[[FakeClock], Broker]:
    return BROKERS[request.param]


@asynccontextmanager
async def running(make_broker: Callable[[FakeClock], Broker]) -> AsyncIterator[Running]:
    clock = FakeClock()
    broker = make_broker(clock)
    delivered: list[Publication | PresenceChange] = []
    async with anyio.create_task_group() as group:
        await group.start(
            lambda *, task_status: broker.run(
                delivered.append,
                lambda: NodeState(sessions=0, presence={}, claims={}),
                task_status=task_status,
            )
        )
        yield Running(broker, clock, delivered)
        group.cancel_scope.cancel()


def draft(room: str, text: str) -> Draft:
    return Draft(room=room, user="u", text=text, id=None, ts=1.0)


async def publish(broker: Broker, room: str, count: int) -> list[Publication]:
    return [await broker.publish(draft(room, str(n))) for n in range(count)]


async def test_publish_assigns_seq_rising_by_one_per_room(
    make_broker: Callable[[FakeClock], Broker],
) -> None:
    async with running(make_broker) as r:
        seqs = [(await r.broker.publish(draft(room, "x"))).seq for room in ["a", "a", "b", "a"]]
        assert seqs == [1, 2, 1, 3]
        assert (await r.broker.recover("a", None)).latest == 3
        assert (await r.broker.recover("never", None)).latest == 0


async def test_subscribed_rooms_are_delivered_in_seq_order(
    make_broker: Callable[[FakeClock], Broker],
) -> None:
    async with running(make_broker) as r:
        await r.broker.subscribe("a")
        await publish(r.broker, "a", 5)
        await r.broker.publish(draft("b", "not subscribed"))
        assert [(p.room, p.seq, p.text) for p in r.delivered] == [
            ("a", n + 1, str(n)) for n in range(5)
        ]


async def test_nothing_is_delivered_after_unsubscribe(
    make_broker: Callable[[FakeClock], Broker],
) -> None:
    async with running(make_broker) as r:
        await r.broker.subscribe("a")
        await r.broker.unsubscribe("a")
        await r.broker.publish(draft("a", "x"))
        assert r.delivered == []


async def test_recover_replays_exactly_the_missed_messages(
    make_broker: Callable[[FakeClock], Broker],
) -> None:
    async with running(make_broker) as r:
        published = await publish(r.broker, "a", 4)
        recovery = await r.broker.recover("a", 1)
        assert recovery.complete
        assert recovery.latest == 4
        assert recovery.publications == tuple(published[1:])


@pytest.mark.parametrize(
    ("since", "complete", "replayed"),
    [(None, False, 0), (8, True, 0), (7, True, 1), (3, True, 5), (2, False, 0), (9, False, 0)],
)
async def test_recovery_is_complete_only_when_the_history_covers_the_gap(
    make_broker: Callable[[FakeClock], Broker], since: int | None, complete: bool, replayed: int
) -> None:
    async with running(make_broker) as r:
        await publish(r.broker, "a", 8)  # history keeps seq 4..8
        recovery = await r.broker.recover("a", since)
        assert (recovery.latest, recovery.complete) == (8, complete)
        assert len(recovery.publications) == replayed


async def test_history_expires_after_its_ttl(make_broker: Callable[[FakeClock], Broker]) -> None:
    async with running(make_broker) as r:
        await r.broker.subscribe("a")
        await publish(r.broker, "a", 2)
        await r.clock.advance(HISTORY_TTL + 1)
        recovery = await r.broker.recover("a", 0)
        assert (recovery.latest, recovery.complete, recovery.publications) == (2, False, ())


async def test_a_room_keeps_its_seq_across_an_empty_spell(
    make_broker: Callable[[FakeClock], Broker],
) -> None:
    async with running(make_broker) as r:
        await r.broker.subscribe("a")
        await r.broker.publish(draft("a", "x"))
        await r.broker.unsubscribe("a")
        await r.clock.advance(HISTORY_TTL / 2)
        await r.broker.subscribe("a")
        assert (await r.broker.publish(draft("a", "y"))).seq == 2


async def test_a_room_nobody_holds_is_forgotten_once_its_history_expired(
    make_broker: Callable[[FakeClock], Broker],
) -> None:
    async with running(make_broker) as r:
        await r.broker.subscribe("a")
        await publish(r.broker, "a", 3)
        await r.broker.unsubscribe("a")
        await r.clock.advance(HISTORY_TTL + 10)
        recovery = await r.broker.recover("a", 3)
        assert (recovery.latest, recovery.complete) == (0, False)


async def test_a_held_room_keeps_its_seq_after_its_history_expired(
    make_broker: Callable[[FakeClock], Broker],
) -> None:
    async with running(make_broker) as r:
        await r.broker.subscribe("a")
        await publish(r.broker, "a", 3)
        await r.clock.advance(HISTORY_TTL + 10)
        assert (await r.broker.recover("a", 3)).complete
        assert (await r.broker.publish(draft("a", "next"))).seq == 4


def test_open_broker_refuses_unknown_schemes() -> None:
    settings = Settings.model_construct(broker_url="kafka://somewhere")
    with pytest.raises(ValueError, match="unsupported broker URL scheme"):
        open_broker(settings, FakeClock())
