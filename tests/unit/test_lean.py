"""The light stand-ins for asyncio.Queue and asyncio.Event behave as Hypercorn needs."""

from __future__ import annotations

import asyncio

import pytest

from chat.hypercorn_hooks.lean import AppQueue, LazyEvent
from tests.clock import settle

pytestmark = pytest.mark.anyio


async def test_items_come_out_in_the_order_they_went_in() -> None:
    queue = AppQueue(10)
    for item in range(5):
        await queue.put(item)
    assert queue.qsize() == 5
    assert [await queue.get() for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_get_waits_for_a_put() -> None:
    queue = AppQueue(10)
    getter = asyncio.ensure_future(queue.get())
    await settle()
    assert not getter.done()
    await queue.put("x")
    assert await asyncio.wait_for(getter, 1) == "x"


async def test_put_waits_while_full_then_goes_in_order() -> None:
    queue = AppQueue(2)
    await queue.put(1)
    await queue.put(2)
    assert queue.full()
    blocked = asyncio.ensure_future(queue.put(3))
    await settle()
    assert not blocked.done()
    assert await queue.get() == 1
    await asyncio.wait_for(blocked, 1)
    assert [await queue.get(), await queue.get()] == [2, 3]


async def test_no_bound_with_maxsize_zero() -> None:
    queue = AppQueue(0)
    for item in range(1000):
        await queue.put(item)
    assert not queue.full()
    assert queue.qsize() == 1000


async def test_two_getters_each_get_one_item() -> None:
    queue = AppQueue(10)
    getters = [asyncio.ensure_future(queue.get()) for _ in range(2)]
    await settle()
    await queue.put("a")
    await queue.put("b")
    assert sorted(await asyncio.gather(*getters)) == ["a", "b"]


async def test_a_cancelled_getter_does_not_swallow_an_item() -> None:
    queue = AppQueue(10)
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await settle()
    await queue.put("only")  # wakes first...
    first.cancel()  # ...which is cancelled before it runs
    assert await asyncio.wait_for(second, 1) == "only"
    assert first.cancelled()


async def test_a_cancelled_putter_hands_its_turn_on() -> None:
    queue = AppQueue(1)
    await queue.put(0)
    first = asyncio.ensure_future(queue.put(1))
    second = asyncio.ensure_future(queue.put(2))
    await settle()
    assert await queue.get() == 0  # wakes first...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.wait_for(second, 1)
    assert await queue.get() == 2
    assert queue.qsize() == 0


async def test_lazy_event_waits_until_set_and_can_be_cleared() -> None:
    event = LazyEvent()
    assert not event.is_set()
    waiter = asyncio.ensure_future(event.wait())
    await settle()
    assert not waiter.done()
    await event.set()
    await asyncio.wait_for(waiter, 1)
    assert event.is_set()
    await event.wait()  # set: returns at once
    await event.clear()
    assert not event.is_set()
    again = asyncio.ensure_future(event.wait())
    await settle()
    assert not again.done()
    await event.set()
    await asyncio.wait_for(again, 1)


async def test_lazy_event_set_before_anyone_waits_needs_no_event() -> None:
    event = LazyEvent()
    await event.set()
    await asyncio.wait_for(event.wait(), 1)
    assert event._event is None
