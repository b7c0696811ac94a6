"""The bounded per-session send queue and the flusher that empties the queues."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest

from chat.flusher import Flusher
from chat.outbox import SendQueue


def test_take_returns_every_queued_frame_in_order_and_empties_the_queue() -> None:
    queue = SendQueue(maxsize=10)
    for frame in ["a", "b", "c"]:
        assert queue.put_nowait(frame) is True
    assert len(queue) == 3
    assert queue.take() == ["a", "b", "c"]
    assert len(queue) == 0
    assert queue.take() == []


def test_put_nowait_refuses_when_full_and_queues_nothing() -> None:
    queue = SendQueue(maxsize=2)
    assert queue.put_nowait("a") is True
    assert queue.put_nowait("b") is True
    assert queue.put_nowait("c") is False
    assert queue.take() == ["a", "b"]


def test_put_nowait_has_room_again_after_a_take() -> None:
    queue = SendQueue(maxsize=2)
    queue.put_nowait("a")
    queue.put_nowait("b")
    queue.take()
    assert queue.put_nowait("c") is True
    assert queue.take() == ["c"]


def test_put_final_goes_past_the_bound() -> None:
    queue = SendQueue(maxsize=1)
    queue.put_nowait("a")
    queue.put_final("bye")
    assert queue.take() == ["a", "bye"]


def test_after_close_nothing_more_is_queued_but_what_was_stays() -> None:
    queue = SendQueue(maxsize=10)
    queue.put_nowait("a")
    queue.close()
    queue.close()  # idempotent
    assert queue.closed
    assert queue.put_nowait("b") is False
    queue.put_final("bye")
    assert queue.take() == ["a"]


def test_a_new_queue_is_open_and_empty() -> None:
    queue = SendQueue(maxsize=1)
    assert not queue.closed
    assert not queue
    assert queue.take() == []


def test_clear_drops_everything_and_returns_the_count() -> None:
    queue = SendQueue(maxsize=10)
    for frame in "abc":
        queue.put_nowait(frame)
    assert queue.clear() == 3
    assert queue.take() == []
    assert queue.clear() == 0


class Recorder:
    """A session as the flusher sees it, recording what was asked of it."""

    def __init__(
        self, log: list[str], name: str, *, fails: bool = False, writer_fails: bool = False
    ) -> None:
        self.log = log
        self.name = name
        self.fails = fails
        self.writer_fails = writer_fails

    def flush(self) -> None:
        self.log.append(f"flush {self.name}")
        if self.fails:
            raise RuntimeError("boom")

    def start_writer(self, frames: list[str]) -> None:
        self.log.append(f"writer {self.name}")
        if self.writer_fails:
            raise RuntimeError("no writer either")


def test_a_flusher_that_is_not_running_tells_the_caller_to_start_a_writer() -> None:
    log: list[str] = []
    assert Flusher().add(Recorder(log, "a")) is False
    assert log == []


@asynccontextmanager
async def flusher_running() -> AsyncIterator[Flusher]:
    """A Flusher running in a task group of its own, cancelled on exit."""
    flusher = Flusher()
    async with anyio.create_task_group() as group:
        group.start_soon(flusher.run)
        await anyio.lowlevel.checkpoint()
        yield flusher
        group.cancel_scope.cancel()


async def turn() -> None:
    """Let the event loop go round: the flusher wakes and flushes what was added."""
    await anyio.lowlevel.checkpoint()
    await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_the_flusher_flushes_each_added_session_once_per_turn_in_order() -> None:
    log: list[str] = []
    async with flusher_running() as flusher:
        assert flusher.add(Recorder(log, "a")) is True
        assert flusher.add(Recorder(log, "b")) is True
        assert log == []  # not before the turn ends
        await turn()
        assert log == ["flush a", "flush b"]
        flusher.add(Recorder(log, "c"))
        await turn()
        assert log == ["flush a", "flush b", "flush c"]


@pytest.mark.anyio
async def test_a_failing_flush_falls_back_to_the_writer_and_the_others_still_flush() -> None:
    log: list[str] = []
    async with flusher_running() as flusher:
        flusher.add(Recorder(log, "bad", fails=True))
        flusher.add(Recorder(log, "good"))
        await turn()
    assert log == ["flush bad", "writer bad", "flush good"]


@pytest.mark.anyio
async def test_a_session_that_cannot_flush_nor_write_does_not_cost_the_others_their_turn() -> None:
    log: list[str] = []
    async with flusher_running() as flusher:
        flusher.add(Recorder(log, "bad", fails=True, writer_fails=True))
        flusher.add(Recorder(log, "good"))
        await turn()
        assert log == ["flush bad", "writer bad", "flush good"]
        flusher.add(Recorder(log, "later"))  # the flusher still runs
        await turn()
        assert log[-1] == "flush later"


@pytest.mark.anyio
async def test_a_session_added_just_before_the_flusher_stops_gets_its_last_turn() -> None:
    log: list[str] = []
    async with flusher_running() as flusher:
        flusher.add(Recorder(log, "a"))
        # Leaving the block cancels the flusher: on asyncio the wake-up set by
        # add() is already due, so the flusher has its last turn first.
    assert log == ["flush a"]
    assert flusher.add(Recorder(log, "b")) is False
    assert log == ["flush a"]


@pytest.mark.anyio
async def test_sessions_pending_when_the_flusher_stops_are_left_to_their_writers() -> None:
    log: list[str] = []
    flusher = Flusher()
    async with anyio.create_task_group() as group:
        group.start_soon(flusher.run)
        await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()
        # Cancelled, but not yet stopped: the add is taken, then never flushed
        # in a turn; the flusher's finally hands it to its writer instead.
        assert flusher.add(Recorder(log, "a")) is True
    assert log == ["writer a"]
    assert flusher.add(Recorder(log, "b")) is False
    assert log == ["writer a"]


@pytest.mark.anyio
async def test_flush_now_flushes_what_was_added_at_once_and_only_once() -> None:
    log: list[str] = []
    async with flusher_running() as flusher:
        flusher.add(Recorder(log, "a"))
        flusher.add(Recorder(log, "b"))
        flusher.flush_now()
        assert log == ["flush a", "flush b"]  # no turn of the loop needed
        await turn()
        assert log == ["flush a", "flush b"]
