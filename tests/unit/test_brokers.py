"""The broker contract, run against every broker (only memory:// exists so far)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

from chat.brokers import Broker, Draft, Publication, open_broker
from chat.brokers.memory import InMemoryBroker

pytestmark = pytest.mark.anyio

BROKERS: dict[str, Callable[[], Broker]] = {"memory": lambda: open_broker("memory://")}


@pytest.fixture(params=sorted(BROKERS))
def make_broker(request: pytest.FixtureRequest) -> Callable[[], Broker]:
    return BROKERS[request.param]


@asynccontextmanager
async def running(broker: Broker) -> AsyncIterator[list[Publication]]:
    delivered: list[Publication] = []
    async with anyio.create_task_group() as group:
        await group.start(
            lambda *, task_status: broker.run(delivered.append, task_status=task_status)
        )
        yield delivered
        group.cancel_scope.cancel()


def draft(room: str, text: str) -> Draft:
    return Draft(room=room, user="u", text=text, id=None, ts=1.0)


async def test_publish_assigns_seq_rising_by_one_per_room(
    make_broker: Callable[[], Broker],
) -> None:
    broker = make_broker()
    async with running(broker):
        seqs = [(await broker.publish(draft(room, "x"))).seq for room in ["a", "a", "b", "a"]]
        assert seqs == [1, 2, 1, 3]
        assert await broker.latest_seq("a") == 3
        assert await broker.latest_seq("never") == 0


async def test_subscribed_rooms_are_delivered_in_seq_order(
    make_broker: Callable[[], Broker],
) -> None:
    broker = make_broker()
    async with running(broker) as delivered:
        await broker.subscribe("a")
        for n in range(5):
            await broker.publish(draft("a", str(n)))
        await broker.publish(draft("b", "not subscribed"))
        assert [(p.room, p.seq, p.text) for p in delivered] == [
            ("a", n + 1, str(n)) for n in range(5)
        ]


async def test_nothing_is_delivered_after_unsubscribe(make_broker: Callable[[], Broker]) -> None:
    broker = make_broker()
    async with running(broker) as delivered:
        await broker.subscribe("a")
        await broker.unsubscribe("a")
        await broker.publish(draft("a", "x"))
        assert delivered == []


async def test_a_room_keeps_its_seq_across_an_empty_spell(
    make_broker: Callable[[], Broker],
) -> None:
    broker = make_broker()
    async with running(broker):
        await broker.subscribe("a")
        await broker.publish(draft("a", "x"))
        await broker.unsubscribe("a")
        await broker.subscribe("a")
        assert (await broker.publish(draft("a", "y"))).seq == 2


async def test_memory_broker_forgets_the_oldest_empty_rooms_beyond_its_bound() -> None:
    broker = InMemoryBroker(idle_rooms_kept=2)
    async with running(broker):
        for room in ["a", "b", "c"]:
            await broker.subscribe(room)
            await broker.publish(draft(room, "x"))
            await broker.unsubscribe(room)
        assert [await broker.latest_seq(room) for room in ["a", "b", "c"]] == [0, 1, 1]


def test_open_broker_refuses_unknown_schemes() -> None:
    with pytest.raises(ValueError, match="unsupported broker URL scheme"):
        open_broker("kafka://somewhere")
