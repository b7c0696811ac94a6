"""The session state machine and its timers (docs/architecture.md), with plain numbers for time."""

from __future__ import annotations

import itertools
from typing import Literal

import pytest

from chat.protocol import Subprotocol
from chat.session import (
    ALLOWED,
    HISTORY_LIMIT,
    TRANSITIONS,
    Due,
    HistoryEntry,
    IllegalTransition,
    Session,
    SessionEvent,
    SessionState,
    Timers,
    next_state,
)

CONNECTING = SessionState.CONNECTING
ACTIVE = SessionState.ACTIVE
IDLE = SessionState.IDLE
CLOSING = SessionState.CLOSING
CLOSED = SessionState.CLOSED

#: The lifecycle of docs/architecture.md, written out independently of chat/session.py.
LEGAL: dict[tuple[SessionState, SessionEvent], SessionState] = {
    (CONNECTING, SessionEvent.ACCEPT): ACTIVE,
    (CONNECTING, SessionEvent.REJECT): CLOSED,
    (ACTIVE, SessionEvent.QUIET): IDLE,
    (IDLE, SessionEvent.ACTIVITY): ACTIVE,
    (ACTIVE, SessionEvent.CLOSE): CLOSING,
    (IDLE, SessionEvent.CLOSE): CLOSING,
    (ACTIVE, SessionEvent.END): CLOSED,
    (IDLE, SessionEvent.END): CLOSED,
    (CLOSING, SessionEvent.END): CLOSED,
}
ILLEGAL = [pair for pair in itertools.product(SessionState, SessionEvent) if pair not in LEGAL]

#: The documented defaults: ping every 25 s, 10 s to answer, idle after 60 s, closed after 600 s.
TIMERS = Timers(
    heartbeat_interval=25.0, heartbeat_timeout=10.0, idle_after=60.0, idle_timeout=600.0
)
#: Heartbeats far away, so that only the idle timers matter.
QUIET_TIMERS = Timers(
    heartbeat_interval=1e9, heartbeat_timeout=10.0, idle_after=60.0, idle_timeout=600.0
)
#: As QUIET_TIMERS, with ``CHAT_IDLE_TIMEOUT=0``.
NEVER_CLOSE_TIMERS = Timers(
    heartbeat_interval=1e9, heartbeat_timeout=10.0, idle_after=60.0, idle_timeout=0.0
)

Step = Literal["accept", "reject", "touch", "ping_sent", "pong_received", "go_idle", "close"]


def new_session(
    timers: Timers = TIMERS, protocol: Subprotocol = Subprotocol.JSON, now: float = 0.0
) -> Session:
    return Session(
        id="s1",
        user="alice",
        protocol=protocol,
        remote="127.0.0.1",
        node="n1",
        timers=timers,
        now=now,
    )


def session_in(state: SessionState) -> Session:
    """A session brought to ``state`` through its public methods."""
    session = new_session()
    if state is CONNECTING:
        return session
    session.accept(1.0)
    if state is IDLE:
        session.go_idle(2.0)
    elif state is CLOSING:
        session.begin_close(2.0, 1001, "shutdown")
    elif state is CLOSED:
        session.close(2.0, 1000, "normal", "client")
    return session


def replay(session: Session, steps: list[tuple[Step, float]]) -> None:
    for step, at in steps:
        if step == "accept":
            session.accept(at)
        elif step == "reject":
            session.reject(at, 403, "forbidden")
        elif step == "touch":
            session.touch(at)
        elif step == "ping_sent":
            session.ping_sent(at)
        elif step == "pong_received":
            session.pong_received(at)
        elif step == "go_idle":
            session.go_idle(at)
        else:
            session.close(at, 1000, "normal", "client")


# -- the transition table -------------------------------------------------------


def test_transition_table_is_the_documented_one() -> None:
    assert dict(TRANSITIONS) == LEGAL


@pytest.mark.parametrize(("state", "event"), list(LEGAL))
def test_next_state_follows_each_legal_pair(state: SessionState, event: SessionEvent) -> None:
    assert next_state(state, event) is LEGAL[state, event]


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_next_state_raises_on_each_illegal_pair(state: SessionState, event: SessionEvent) -> None:
    with pytest.raises(IllegalTransition) as excinfo:
        next_state(state, event)
    assert excinfo.value.state is state
    assert excinfo.value.event is event


@pytest.mark.parametrize(("state", "event"), list(LEGAL))
def test_handle_applies_each_legal_pair_and_records_it(
    state: SessionState, event: SessionEvent
) -> None:
    session = session_in(state)
    assert session.state is state

    result = session.handle(event, 50.0, "because")

    new = LEGAL[state, event]
    assert result is new
    assert session.state is new
    # History shows public states: the start of a close keeps the state it closed from.
    shown = state if new is CLOSING else new
    assert session.history[-1] == HistoryEntry(shown, 50.0, "because")
    assert session.public_state is shown


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_handle_refuses_each_illegal_pair_and_changes_nothing(
    state: SessionState, event: SessionEvent
) -> None:
    session = session_in(state)
    history_before = list(session.history)

    with pytest.raises(IllegalTransition):
        session.handle(event, 50.0, "because")

    assert session.state is state
    assert list(session.history) == history_before


def test_illegal_transition_message_names_the_event_and_the_state() -> None:
    error = IllegalTransition(CLOSED, SessionEvent.ACCEPT)
    assert "accept" in str(error)
    assert "closed" in str(error)


@pytest.mark.parametrize(
    ("state", "live"),
    [(CONNECTING, False), (ACTIVE, True), (IDLE, True), (CLOSING, True), (CLOSED, False)],
)
def test_is_live_only_between_accept_and_close(state: SessionState, live: bool) -> None:
    assert session_in(state).is_live is live


@pytest.mark.parametrize(
    ("state", "frames", "timers", "sends"),
    [
        (CONNECTING, False, False, True),
        (ACTIVE, True, True, True),
        (IDLE, True, True, True),
        (CLOSING, False, False, False),
        (CLOSED, False, False, False),
    ],
)
def test_what_each_state_allows(
    state: SessionState, frames: bool, timers: bool, sends: bool
) -> None:
    assert (ALLOWED[state].frames, ALLOWED[state].timers, ALLOWED[state].sends) == (
        frames,
        timers,
        sends,
    )


def test_a_closing_session_shows_the_state_it_closed_from_and_that_it_is_closing() -> None:
    session = session_in(IDLE)
    session.begin_close(9.0, 4500, "idle_timeout")
    assert (session.state, session.public_state, session.closing) == (CLOSING, IDLE, True)
    assert session.history[-1] == HistoryEntry(IDLE, 9.0, "closing: 4500 idle_timeout")
    assert session.due(1e9) is None  # no timer runs while closing
    session.close(10.0, 4500, "idle_timeout", "server")
    assert (session.state, session.public_state, session.closing) == (CLOSED, CLOSED, False)


# -- the methods the async layer calls --------------------------------------------


def test_a_new_session_is_connecting_with_one_history_entry() -> None:
    session = new_session(now=3.0)
    assert session.state is CONNECTING
    assert len(session.history) == 1
    assert session.history[0].state is CONNECTING
    assert session.history[0].at == 3.0
    assert session.connected_at == 3.0


def test_accept_makes_the_session_active_and_counts_as_activity() -> None:
    session = new_session(now=0.0)
    session.accept(5.0)
    assert session.state is ACTIVE
    assert session.last_activity == 5.0
    assert session.history[-1].state is ACTIVE
    assert session.history[-1].at == 5.0


def test_reject_closes_a_connecting_session_with_its_cause() -> None:
    session = new_session(now=0.0)
    session.reject(2.0, 403, "origin")
    assert session.state is CLOSED
    assert session.close_reason == "origin"
    assert session.closed_by == "server"
    assert session.closed_at == 2.0
    assert session.close_code is None
    assert session.history[-1].state is CLOSED
    assert session.history[-1].at == 2.0
    assert "403" in session.history[-1].reason
    assert "origin" in session.history[-1].reason


def test_close_records_code_reason_who_and_when() -> None:
    session = session_in(ACTIVE)
    session.close(9.0, 4500, "idle_timeout", "server")
    assert session.state is CLOSED
    assert session.close_code == 4500
    assert session.close_reason == "idle_timeout"
    assert session.closed_by == "server"
    assert session.closed_at == 9.0
    assert session.history[-1].state is CLOSED
    assert session.history[-1].at == 9.0
    assert "4500" in session.history[-1].reason


def test_close_from_idle_closes() -> None:
    session = session_in(IDLE)
    session.close(9.0, 1001, "shutdown", "server")
    assert session.state is CLOSED


def test_a_second_close_raises_and_keeps_the_first_cause() -> None:
    session = session_in(ACTIVE)
    session.close(9.0, 1000, "normal", "client")
    with pytest.raises(IllegalTransition):
        session.close(10.0, 1011, "internal_error", "server")
    assert session.close_code == 1000
    assert session.close_reason == "normal"
    assert session.closed_by == "client"
    assert session.closed_at == 9.0
    assert len(session.history) == 3


def test_reject_after_accept_raises_and_changes_nothing() -> None:
    session = session_in(ACTIVE)
    with pytest.raises(IllegalTransition):
        session.reject(9.0, 503, "draining")
    assert session.state is ACTIVE
    assert session.close_reason is None
    assert session.closed_by is None
    assert session.closed_at is None


def test_go_idle_makes_an_active_session_idle() -> None:
    session = session_in(ACTIVE)
    session.go_idle(61.0)
    assert session.state is IDLE
    assert session.history[-1].state is IDLE
    assert session.history[-1].at == 61.0


def test_touch_wakes_an_idle_session() -> None:
    session = session_in(IDLE)
    assert session.touch(70.0) is True
    assert session.state is ACTIVE
    assert session.last_activity == 70.0
    assert session.history[-1].state is ACTIVE
    assert session.history[-1].at == 70.0


def test_touch_on_an_active_session_records_activity_without_a_state_change() -> None:
    session = session_in(ACTIVE)
    history_before = list(session.history)
    assert session.touch(30.0) is False
    assert session.state is ACTIVE
    assert session.last_activity == 30.0
    assert list(session.history) == history_before


@pytest.mark.parametrize("step", ["ping_sent", "pong_received"])
def test_heartbeats_are_not_activity(step: Step) -> None:
    session = session_in(ACTIVE)
    replay(session, [(step, 30.0)])
    assert session.last_activity == 1.0


def test_history_is_bounded_and_keeps_the_newest() -> None:
    session = session_in(ACTIVE)
    at = 1.0
    for _ in range(HISTORY_LIMIT):
        at += 1.0
        session.go_idle(at)
        at += 1.0
        session.touch(at)

    assert len(session.history) == HISTORY_LIMIT
    assert session.history[-1].state is ACTIVE
    assert session.history[-1].at == at
    assert session.history[-2].state is IDLE
    assert session.history[-2].at == at - 1.0
    assert all(entry.state is not CONNECTING for entry in session.history)


# -- the timers: what due(now) asks for --------------------------------------------

DUE_CASES: list[tuple[str, Timers, Subprotocol, list[tuple[Step, float]], float, Due | None]] = [
    # (id, timers, protocol, steps, now, expected)
    ("nothing-right-after-accept", TIMERS, Subprotocol.JSON, [("accept", 0)], 0, None),
    ("no-ping-before-interval", TIMERS, Subprotocol.JSON, [("accept", 0)], 24.9, None),
    ("ping-at-interval", TIMERS, Subprotocol.JSON, [("accept", 0)], 25, Due.PING),
    ("ping-counts-from-accept", TIMERS, Subprotocol.JSON, [("accept", 10)], 34.9, None),
    ("ping-after-accept-interval", TIMERS, Subprotocol.JSON, [("accept", 10)], 35, Due.PING),
    ("ping-for-batch-sessions", TIMERS, Subprotocol.BATCH, [("accept", 0)], 25, Due.PING),
    (
        "no-second-ping-while-awaiting-pong",
        TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("ping_sent", 25)],
        34.9,
        None,
    ),
    (
        "heartbeat-timeout-without-pong",
        TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("ping_sent", 25)],
        35,
        Due.HEARTBEAT_TIMEOUT,
    ),
    (
        "heartbeat-timeout-stays-due",
        TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("ping_sent", 25)],
        50,
        Due.HEARTBEAT_TIMEOUT,
    ),
    (
        "pong-lifts-heartbeat-timeout",
        TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("ping_sent", 25), ("pong_received", 30)],
        35,
        None,
    ),
    (
        "next-ping-counts-from-last-ping",
        TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("ping_sent", 25), ("pong_received", 30)],
        49.9,
        None,
    ),
    (
        "next-ping-one-interval-after-last",
        TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("ping_sent", 25), ("pong_received", 30)],
        50,
        Due.PING,
    ),
    ("text-never-pings", TIMERS, Subprotocol.TEXT, [("accept", 0)], 59.9, None),
    (
        "text-idle-never-pings",
        TIMERS,
        Subprotocol.TEXT,
        [("accept", 0), ("go_idle", 60)],
        599.9,
        None,
    ),
    ("text-still-goes-idle", TIMERS, Subprotocol.TEXT, [("accept", 0)], 60, Due.IDLE),
    ("no-idle-before-idle-after", QUIET_TIMERS, Subprotocol.JSON, [("accept", 0)], 59.9, None),
    ("idle-at-idle-after", QUIET_TIMERS, Subprotocol.JSON, [("accept", 0)], 60, Due.IDLE),
    (
        "touch-postpones-idle",
        QUIET_TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("touch", 30)],
        89.9,
        None,
    ),
    (
        "idle-after-last-touch",
        QUIET_TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("touch", 30)],
        90,
        Due.IDLE,
    ),
    (
        "heartbeats-do-not-postpone-idle",
        TIMERS,
        Subprotocol.JSON,
        [
            ("accept", 0),
            ("ping_sent", 25),
            ("pong_received", 26),
            ("ping_sent", 50),
            ("pong_received", 51),
        ],
        60,
        Due.IDLE,
    ),
    (
        "idle-session-is-not-asked-to-go-idle-again",
        QUIET_TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("go_idle", 60)],
        100,
        None,
    ),
    (
        "idle-session-is-still-pinged",
        TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("ping_sent", 25), ("pong_received", 26), ("go_idle", 60)],
        75,
        Due.PING,
    ),
    (
        "no-idle-timeout-before-it",
        QUIET_TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("go_idle", 60)],
        599.9,
        None,
    ),
    (
        "idle-timeout",
        QUIET_TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("go_idle", 60)],
        600,
        Due.IDLE_TIMEOUT,
    ),
    (
        "idle-timeout-counts-from-last-touch",
        QUIET_TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("go_idle", 60), ("touch", 100), ("go_idle", 160)],
        699.9,
        None,
    ),
    (
        "heartbeats-do-not-postpone-idle-timeout",
        TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("go_idle", 60), ("ping_sent", 575), ("pong_received", 576)],
        600,
        Due.IDLE_TIMEOUT,
    ),
    (
        "idle-timeout-zero-never-closes",
        NEVER_CLOSE_TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("go_idle", 60)],
        1e6,
        None,
    ),
    (
        "idle-timeout-zero-still-goes-idle",
        NEVER_CLOSE_TIMERS,
        Subprotocol.JSON,
        [("accept", 0)],
        1e6,
        Due.IDLE,
    ),
    ("connecting-asks-nothing", TIMERS, Subprotocol.JSON, [], 1e6, None),
    ("closed-asks-nothing", TIMERS, Subprotocol.JSON, [("accept", 0), ("close", 1)], 1e6, None),
    (
        "closed-while-awaiting-pong-asks-nothing",
        TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("ping_sent", 25), ("close", 26)],
        1e6,
        None,
    ),
    ("rejected-asks-nothing", TIMERS, Subprotocol.JSON, [("reject", 0)], 1e6, None),
    (
        "idle-timeout-wins-over-idle",
        QUIET_TIMERS,
        Subprotocol.JSON,
        [("accept", 0)],
        600,
        Due.IDLE_TIMEOUT,
    ),
    (
        "heartbeat-timeout-wins-over-idle",
        TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("ping_sent", 55)],
        65,
        Due.HEARTBEAT_TIMEOUT,
    ),
    ("idle-wins-over-ping", TIMERS, Subprotocol.JSON, [("accept", 0)], 60, Due.IDLE),
    (
        "idle-timeout-wins-over-ping",
        TIMERS,
        Subprotocol.JSON,
        [("accept", 0), ("go_idle", 60)],
        600,
        Due.IDLE_TIMEOUT,
    ),
]


@pytest.mark.parametrize(
    ("timers", "protocol", "steps", "now", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in DUE_CASES],
)
def test_due(
    timers: Timers,
    protocol: Subprotocol,
    steps: list[tuple[Step, float]],
    now: float,
    expected: Due | None,
) -> None:
    session = new_session(timers=timers, protocol=protocol, now=0.0)
    replay(session, steps)
    assert session.due(now) == expected


def test_due_changes_nothing() -> None:
    session = new_session()
    session.accept(0.0)
    history_before = list(session.history)
    assert session.due(1e6) is Due.IDLE_TIMEOUT
    assert session.state is ACTIVE
    assert list(session.history) == history_before
