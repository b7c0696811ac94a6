"""The bounded per-session send queue: never blocks a producer, drains in order, then closes."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from chat.sendqueue import Flusher, QueueClosed, SendQueue

#: Guards against a hang; no test waits for it to expire.
HANG_GUARD = 5.0


@pytest.mark.anyio
async def test_get_batch_takes_every_queued_frame_in_order() -> None:
    queue = SendQueue(maxsize=10)
    for frame in ["a", "b", "c"]:
        assert queue.put_nowait(frame) is True
    with anyio.fail_after(HANG_GUARD):
        assert await queue.get_batch() == ["a", "b", "c"]
    assert len(queue) == 0


def test_len_counts_queued_frames() -> None:
    queue = SendQueue(maxsize=10)
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert len(queue) == 2


@pytest.mark.anyio
async def test_put_nowait_refuses_when_full_and_queues_nothing() -> None:
    queue = SendQueue(maxsize=2)
    assert queue.put_nowait("a") is True
    assert queue.put_nowait("b") is True

    assert queue.put_nowait("c") is False

    assert len(queue) == 2
    with anyio.fail_after(HANG_GUARD):
        assert await queue.get_batch() == ["a", "b"]


@pytest.mark.anyio
async def test_put_nowait_has_room_again_after_a_batch_is_taken() -> None:
    queue = SendQueue(maxsize=1)
    queue.put_nowait("a")
    with anyio.fail_after(HANG_GUARD):
        await queue.get_batch()
    assert queue.put_nowait("b") is True


@pytest.mark.anyio
async def test_put_final_goes_past_the_bound() -> None:
    queue = SendQueue(maxsize=1)
    queue.put_nowait("a")
    assert queue.put_nowait("b") is False

    queue.put_final("bye")

    assert len(queue) == 2
    with anyio.fail_after(HANG_GUARD):
        assert await queue.get_batch() == ["a", "bye"]


def test_put_nowait_after_close_refuses() -> None:
    queue = SendQueue(maxsize=10)
    queue.close()
    assert queue.put_nowait("a") is False
    assert len(queue) == 0


def test_put_final_after_close_queues_nothing() -> None:
    queue = SendQueue(maxsize=10)
    queue.close()
    queue.put_final("bye")
    assert len(queue) == 0


def test_closed_is_set_by_close() -> None:
    queue = SendQueue(maxsize=10)
    assert queue.closed is False
    queue.close()
    assert queue.closed is True


@pytest.mark.anyio
async def test_close_lets_the_writer_drain_then_raises_queue_closed() -> None:
    queue = SendQueue(maxsize=10)
    queue.put_nowait("a")
    queue.put_final("bye")
    queue.close()
    with anyio.fail_after(HANG_GUARD):
        assert await queue.get_batch() == ["a", "bye"]
        with pytest.raises(QueueClosed):
            await queue.get_batch()


@pytest.mark.anyio
async def test_close_is_idempotent() -> None:
    queue = SendQueue(maxsize=10)
    queue.close()
    queue.close()
    with anyio.fail_after(HANG_GUARD), pytest.raises(QueueClosed):
        await queue.get_batch()


@pytest.mark.anyio
async def test_clear_drops_everything_and_returns_the_count() -> None:
    queue = SendQueue(maxsize=10)
    queue.put_nowait("a")
    queue.put_nowait("b")
    queue.put_final("bye")

    assert queue.clear() == 3

    assert len(queue) == 0
    assert queue.put_nowait("c") is True
    with anyio.fail_after(HANG_GUARD):
        assert await queue.get_batch() == ["c"]


def test_clear_of_an_empty_queue_returns_zero() -> None:
    assert SendQueue(maxsize=10).clear() == 0


@pytest.mark.anyio
async def test_get_batch_waits_until_a_put() -> None:
    queue = SendQueue(maxsize=10)
    batches: list[list[str]] = []

    async def writer() -> None:
        batches.append(await queue.get_batch())

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await anyio.wait_all_tasks_blocked()
            assert batches == []
            queue.put_nowait("a")

    assert batches == [["a"]]


@pytest.mark.anyio
async def test_get_batch_waits_until_a_final_put() -> None:
    queue = SendQueue(maxsize=1)
    batches: list[list[str]] = []

    async def writer() -> None:
        batches.append(await queue.get_batch())

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await anyio.wait_all_tasks_blocked()
            queue.put_final("bye")

    assert batches == [["bye"]]


@pytest.mark.anyio
async def test_close_wakes_a_waiting_get_batch_with_queue_closed() -> None:
    queue = SendQueue(maxsize=10)
    outcomes: list[str] = []

    async def writer() -> None:
        try:
            await queue.get_batch()
        except QueueClosed:
            outcomes.append("closed")

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await anyio.wait_all_tasks_blocked()
            assert outcomes == []
            queue.close()

    assert outcomes == ["closed"]


@pytest.mark.anyio
async def test_get_batch_takes_everything_put_before_the_writer_ran() -> None:
    queue = SendQueue(maxsize=10)
    batches: list[list[str]] = []

    async def writer() -> None:
        batches.append(await queue.get_batch())

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await anyio.wait_all_tasks_blocked()
            queue.put_nowait("a")
            queue.put_nowait("b")
            queue.put_final("bye")

    assert batches == [["a", "b", "bye"]]


class Recorder:
    """A session as the flusher sees it, recording what was asked of it."""

    def __init__(self, log: list[str], name: str, *, fails: bool = False) -> None:
        self.log = log
        self.name = name
        self.fails = fails

    def flush(self) -> None:
        self.log.append(f"flush {self.name}")
        if self.fails:
            raise RuntimeError("boom")

    def wake_writer(self) -> None:
        self.log.append(f"wake {self.name}")


def test_a_flusher_that_is_not_running_tells_the_caller_to_wake_its_writer() -> None:
    log: list[str] = []
    assert Flusher().add(Recorder(log, "a")) is False
    assert log == []


@pytest.mark.anyio
async def test_the_flusher_flushes_each_added_session_once_per_turn_in_order() -> None:
    log: list[str] = []
    flusher = Flusher()
    async with anyio.create_task_group() as group:
        group.start_soon(flusher.run)
        await anyio.lowlevel.checkpoint()
        assert flusher.add(Recorder(log, "a")) is True
        assert flusher.add(Recorder(log, "b")) is True
        assert log == []  # not before the turn ends
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        assert log == ["flush a", "flush b"]
        flusher.add(Recorder(log, "c"))
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        assert log == ["flush a", "flush b", "flush c"]
        group.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_failing_flush_falls_back_to_the_writer_and_the_others_still_flush() -> None:
    log: list[str] = []
    flusher = Flusher()
    async with anyio.create_task_group() as group:
        group.start_soon(flusher.run)
        await anyio.lowlevel.checkpoint()
        flusher.add(Recorder(log, "bad", fails=True))
        flusher.add(Recorder(log, "good"))
        await anyio.lowlevel.checkpoint()
        await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()
    assert log == ["flush bad", "wake bad", "flush good"]


@pytest.mark.anyio
async def test_sessions_pending_when_the_flusher_stops_are_left_to_their_writers() -> None:
    log: list[str] = []
    flusher = Flusher()
    async with anyio.create_task_group() as group:
        group.start_soon(flusher.run)
        await anyio.lowlevel.checkpoint()
        flusher.add(Recorder(log, "a"))
        group.cancel_scope.cancel()
    # Flushed in its last turn, or handed back to its writer: never dropped.
    assert log in (["flush a"], ["wake a"])
    assert flusher.add(Recorder(log, "b")) is False
