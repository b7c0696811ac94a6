"""The registry's watch (chat/watch.py): bounded, coalescing feeds of changed sessions,
fed by the registry and the supervisor; and the trend's ring of samples."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import anyio.lowlevel
import pytest

from chat.errors import SessionClosed
from chat.protocol import Subprotocol
from chat.registry import Registry
from chat.session import Session, Timers
from chat.supervisor import Supervisor
from chat.watch import Changes, Feed, Sample, TooManyWatchers, Trend, Watch
from tests.clock import FakeClock

TIMERS = Timers(heartbeat_interval=25.0, heartbeat_timeout=10.0, idle_after=5.0, idle_timeout=0)


def test_a_feed_gives_each_changed_id_once_in_order_of_first_change() -> None:
    feed = Feed(limit=10)
    for session_id in ("a", "b", "a", "c", "b"):
        feed.mark(session_id)
    assert feed.take() == Changes(("a", "b", "c"))
    assert feed.take() == Changes(())
    assert not feed.take()


def test_a_feed_past_its_limit_forgets_the_ids_and_says_it_overflowed() -> None:
    feed = Feed(limit=3)
    for session_id in ("a", "b", "c", "d", "e"):
        feed.mark(session_id)
    assert feed.take() == Changes((), overflowed=True)
    feed.mark("f")
    assert feed.take() == Changes(("f",))


def test_a_marked_id_already_held_does_not_overflow_a_full_feed() -> None:
    feed = Feed(limit=2)
    for session_id in ("a", "b", "a", "b"):
        feed.mark(session_id)
    assert feed.take() == Changes(("a", "b"))


@pytest.mark.anyio
async def test_a_feed_wakes_its_reader_on_a_change() -> None:
    feed = Feed()
    with anyio.fail_after(2):
        async with anyio.create_task_group() as group:
            group.start_soon(feed.wait)
            await anyio.lowlevel.checkpoint()
            feed.mark("a")
    assert feed.take() == Changes(("a",))


def test_a_watch_tells_every_subscriber_and_forgets_one_that_left() -> None:
    watch = Watch()
    assert not watch.watching
    with watch.subscribe() as first:
        with watch.subscribe() as second:
            watch.changed("a")
        watch.changed("b")
        assert first.take() == Changes(("a", "b"))
        assert second.take() == Changes(("a",))
    assert not watch.watching


def test_a_watch_refuses_a_subscriber_beyond_its_maximum() -> None:
    watch = Watch(max_feeds=1)
    with watch.subscribe():
        assert watch.full
        with pytest.raises(TooManyWatchers), watch.subscribe():
            pass
    with watch.subscribe():
        pass


def test_a_trend_keeps_the_last_samples_oldest_first() -> None:
    trend = Trend(2)
    samples = [Sample(float(at), {"active": at}, at, at) for at in range(3)]
    for sample in samples:
        trend.record(sample)
    assert trend.samples() == samples[1:]


@dataclass
class FakeLive:
    session: Session
    queued: int = 0

    def on_timer(self, now: float) -> None:
        if self.session.state.value == "active" and now - self.session.last_activity >= 5.0:
            self.session.go_idle(now)

    def close(self, error: SessionClosed) -> None:
        raise AssertionError("not closed here")

    def abort(self) -> None:
        raise AssertionError("not aborted here")


def live_session(session_id: str, now: float) -> FakeLive:
    session = Session(
        id=session_id,
        user="u",
        protocol=Subprotocol.JSON,
        remote="127.0.0.1:1",
        node="n",
        timers=TIMERS,
        now=now,
    )
    return FakeLive(session)


def test_the_registry_reports_sessions_added_accepted_and_retired() -> None:
    registry = Registry(retention=60, max_closed=10)
    live = live_session("s1", 0.0)
    with registry.watch.subscribe() as feed:
        registry.add(live)
        assert feed.take() == Changes(("s1",))
        live.session.accept(1.0)
        registry.accepted(live)
        assert feed.take() == Changes(("s1",))
        live.session.close(2.0, 1000, "normal", "client")
        registry.finished(live)
        assert feed.take() == Changes(("s1",))


def test_the_supervisor_reports_state_changes_only_while_someone_watches() -> None:
    clock = FakeClock()
    registry = Registry(retention=60, max_closed=10)
    supervisor = Supervisor(registry, clock, 1.0)
    quiet, busy = live_session("quiet", clock.now()), live_session("busy", clock.now())
    for live in (quiet, busy):
        registry.add(live)
        live.session.accept(clock.now())
    supervisor.check(clock.now())
    with registry.watch.subscribe() as feed:
        supervisor.check(clock.now() + 1)  # the first look reports what changed since the last
        feed.take()
        supervisor.check(clock.now() + 2)
        assert feed.take() == Changes(())  # nothing changed
        busy.session.touch(clock.now() + 4)
        supervisor.check(clock.now() + 6)  # quiet goes idle here; busy stays active
        assert feed.take() == Changes(("quiet",))
        assert quiet.session.state.value == "idle"


def test_ten_thousand_sessions_going_idle_at_once_overflow_a_feed_instead_of_queueing() -> None:
    # The monitor at 10,000 sessions: a wave of changes costs a subscriber one resync,
    # never 10,000 ids (let alone views) held for it.
    clock = FakeClock()
    registry = Registry(retention=60, max_closed=10)
    supervisor = Supervisor(registry, clock, 1.0)
    for n in range(10_000):
        live = live_session(f"s{n}", clock.now())
        registry.add(live)
        live.session.accept(clock.now())
    supervisor.check(clock.now())
    with registry.watch.subscribe() as feed:
        supervisor.check(clock.now() + 6)  # every one goes idle in this pass
        assert registry.counts()["idle"] == 10_000
        assert feed.take() == Changes((), overflowed=True)
        supervisor.check(clock.now() + 7)  # then nothing changes
        assert feed.take() == Changes(())


def test_a_steady_churn_at_ten_thousand_sessions_reports_only_the_sessions_that_changed() -> None:
    clock = FakeClock()
    registry = Registry(retention=60, max_closed=10)
    supervisor = Supervisor(registry, clock, 1.0)
    lives = [live_session(f"s{n}", clock.now()) for n in range(10_000)]
    for live in lives:
        registry.add(live)
        live.session.accept(clock.now())
    supervisor.check(clock.now())
    with registry.watch.subscribe() as feed:
        supervisor.check(clock.now() + 1)
        feed.take()
        woken = [lives[n] for n in range(0, 10_000, 1_000)]
        for live in woken:
            live.session.touch(clock.now() + 1.5)  # active activity: no state change
        supervisor.check(clock.now() + 2)
        assert feed.take() == Changes(())
        supervisor.check(clock.now() + 6)  # all but the touched go idle: an overflow
        assert feed.take().overflowed
        ids = tuple(live.session.id for live in woken)
        supervisor.check(clock.now() + 7)  # the touched go idle; the others are not sent again
        assert feed.take() == Changes(ids)
        for live in woken:
            live.session.touch(clock.now() + 8)  # idle -> active, between two passes
        supervisor.check(clock.now() + 8.5)
        assert feed.take() == Changes(ids)
        supervisor.check(clock.now() + 9)
        assert feed.take() == Changes(())
