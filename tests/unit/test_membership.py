"""A session's rooms and its place in each (chat/membership.py), with plain values."""

from __future__ import annotations

import pytest

from chat.envelope import Publication, Recovery, encode_message
from chat.membership import Entry, Membership, Verdict

RUN = "run-1"
OTHER = "run-2"


def publication(seq: int, room: str = "lobby", epoch: str = RUN) -> Publication:
    return Publication(room, seq, "alice", f"m{seq}", None, 0.0, epoch)


def place(members: Membership, seq: int, room: str = "lobby", epoch: str = RUN) -> Verdict:
    message = publication(seq, room, epoch)
    return members.place(message, encode_message(message))


def replayed(*seqs: int, room: str = "lobby") -> tuple[Publication, ...]:
    return tuple(publication(seq, room) for seq in seqs)


def fresh(
    rooms: list[str] | None = None, *, hold_limit: int = 10, left_limit: int = 4
) -> Membership:
    return Membership([] if rooms is None else rooms, hold_limit=hold_limit, left_limit=left_limit)


def inside(room: str = "lobby", latest: int = 0) -> Membership:
    """A membership that has joined ``room`` at ``latest``."""
    members = fresh()
    members.joining(room)
    members.entered(room, Recovery(latest, RUN), room_for=100)
    return members


def position(members: Membership, room: str = "lobby") -> tuple[str, int] | None:
    cursor = members.cursor(room)
    return None if cursor is None else (cursor.epoch, cursor.seq)


# -- joining -----------------------------------------------------------------------


def test_a_room_being_joined_counts_as_joined_but_has_no_cursor_yet() -> None:
    rooms: list[str] = []
    members = fresh(rooms)
    members.joining("lobby")
    assert rooms == ["lobby"]
    assert members.rooms is rooms
    assert "lobby" in members
    assert "games" not in members
    assert members.cursor("lobby") is None


def test_live_messages_are_held_while_their_room_is_joined() -> None:
    members = inside("games", latest=3)
    members.joining("lobby")
    assert [place(members, seq) for seq in (1, 2)] == [Verdict.HELD, Verdict.HELD]
    # Another room's messages are not held back.
    assert place(members, 4, room="games") is Verdict.SEND


def test_holding_more_than_the_hold_limit_overflows() -> None:
    members = fresh(hold_limit=2)
    members.joining("lobby")
    assert [place(members, seq) for seq in (1, 2, 3)] == [
        Verdict.HELD,
        Verdict.HELD,
        Verdict.OVERFLOW,
    ]
    entry = members.entered("lobby", Recovery(0, RUN), room_for=100)
    assert [p.seq for p, _ in entry.held] == [1, 2]


def test_entered_starts_the_cursor_at_the_rooms_latest_seq_and_hands_back_what_was_held() -> None:
    members = fresh()
    members.joining("lobby")
    for seq in (8, 9):
        place(members, seq)
    entry = members.entered("lobby", Recovery(7, RUN), room_for=100)
    assert entry == Entry(
        seq=7,
        epoch=RUN,
        recovered=False,
        replay=(),
        held=tuple((p, encode_message(p)) for p in replayed(8, 9)),
    )
    assert position(members) == (RUN, 7)
    # Nothing is held any more: the next live message is placed against the cursor.
    assert place(members, 8) is Verdict.SEND


def test_entered_with_a_complete_recovery_replays_it() -> None:
    members = fresh()
    members.joining("lobby")
    entry = members.entered("lobby", Recovery(5, RUN, replayed(3, 4, 5), complete=True), 100)
    assert (entry.seq, entry.recovered, entry.replay) == (5, True, replayed(3, 4, 5))


def test_entered_with_an_incomplete_recovery_is_not_recovered() -> None:
    members = fresh()
    members.joining("lobby")
    entry = members.entered("lobby", Recovery(30, RUN), room_for=100)
    assert (entry.seq, entry.recovered, entry.replay) == (30, False, ())


@pytest.mark.parametrize(
    ("room_for", "recovered"), [(100, True), (6, True), (3, False), (0, False)]
)
def test_a_replay_that_would_not_fit_is_not_sent(room_for: int, recovered: bool) -> None:
    members = fresh()
    members.joining("lobby")
    recovery = Recovery(4, RUN, replayed(1, 2, 3, 4), complete=True)
    entry = members.entered("lobby", recovery, room_for)
    assert (entry.seq, entry.recovered) == (4, recovered)
    assert entry.replay == (replayed(1, 2, 3, 4) if recovered else ())


# -- live messages -------------------------------------------------------------------


def test_each_seq_is_sent_once_and_a_gap_is_skipped_over() -> None:
    members = inside(latest=5)
    verdicts = [place(members, seq) for seq in (6, 6, 5, 9, 7, 10)]
    assert verdicts == [
        Verdict.SEND,
        Verdict.DROP,
        Verdict.DROP,
        Verdict.SEND,
        Verdict.DROP,
        Verdict.SEND,
    ]
    assert position(members) == (RUN, 10)


def test_a_message_of_another_run_is_a_new_run_and_moves_nothing() -> None:
    members = inside(latest=5)
    assert place(members, 1, epoch=OTHER) is Verdict.NEW_RUN
    assert position(members) == (RUN, 5)


def test_a_message_of_a_room_not_joined_is_dropped() -> None:
    members = inside("lobby")
    assert place(members, 1, room="games") is Verdict.DROP


def test_held_messages_the_replay_covered_are_dropped_after_the_join() -> None:
    members = fresh()
    members.joining("lobby")
    for seq in (4, 5, 6):
        place(members, seq)
    entry = members.entered("lobby", Recovery(5, RUN, replayed(3, 4, 5), complete=True), 100)
    assert [members.place(p, frame) for p, frame in entry.held] == [
        Verdict.DROP,
        Verdict.DROP,
        Verdict.SEND,
    ]


# -- new runs ------------------------------------------------------------------------


def test_restart_follows_a_new_run_of_a_joined_room() -> None:
    members = inside(latest=5)
    assert members.restart("lobby", OTHER, 0) is True
    assert position(members) == (OTHER, 0)
    assert place(members, 1, epoch=OTHER) is Verdict.SEND


@pytest.mark.parametrize(
    ("room", "epoch"),
    [("lobby", RUN), ("games", OTHER), ("joining", OTHER)],
    ids=["same run", "not joined", "being joined"],
)
def test_restart_changes_nothing_for_the_same_run_or_a_room_without_a_cursor(
    room: str, epoch: str
) -> None:
    members = inside(latest=5)
    members.joining("joining")
    assert members.restart(room, epoch, 9) is False
    assert position(members) == (RUN, 5)
    assert position(members, "joining") is None


# -- leaving -------------------------------------------------------------------------


def test_abandon_unjoins_a_room_being_joined_and_drops_what_was_held() -> None:
    members = fresh()
    members.joining("lobby")
    place(members, 1)
    members.abandon("lobby")
    assert members.rooms == []
    assert place(members, 2) is Verdict.DROP


def test_abandon_leaves_a_joined_room_joined() -> None:
    members = inside(latest=5)
    members.abandon("lobby")
    assert members.rooms == ["lobby"]
    assert position(members) == (RUN, 5)


def test_leave_drops_the_room_and_its_cursor() -> None:
    members = inside(latest=5)
    members.leave("lobby")
    assert members.rooms == []
    assert members.cursor("lobby") is None
    assert place(members, 6) is Verdict.DROP


def test_forget_drops_the_cursor_but_not_the_rooms_list() -> None:
    members = inside(latest=5)
    members.forget("lobby")
    assert members.rooms == ["lobby"]
    assert members.cursor("lobby") is None
    assert place(members, 6) is Verdict.DROP


def test_a_rejoin_never_resends_what_was_sent_before_leaving() -> None:
    members = inside(latest=2)
    for seq in (3, 4, 5):
        place(members, seq)
    members.leave("lobby")
    members.joining("lobby")
    recovery = Recovery(8, RUN, replayed(3, 4, 5, 6, 7, 8), complete=True)
    entry = members.entered("lobby", recovery, room_for=100)
    assert (entry.seq, entry.recovered, entry.replay) == (8, True, replayed(6, 7, 8))


@pytest.mark.parametrize(
    ("epoch", "latest", "seq"),
    [(RUN, 3, 5), (RUN, 5, 5), (RUN, 9, 9), (OTHER, 3, 3)],
    ids=["behind", "same", "ahead", "new run"],
)
def test_a_rejoin_starts_at_the_later_of_the_latest_seq_and_what_was_sent(
    epoch: str, latest: int, seq: int
) -> None:
    members = inside(latest=5)
    members.leave("lobby")
    members.joining("lobby")
    entry = members.entered("lobby", Recovery(latest, epoch), room_for=100)
    assert (entry.seq, entry.epoch) == (seq, epoch)
    assert position(members) == (epoch, seq)


def test_a_rejoin_in_a_new_run_replays_everything_recovered() -> None:
    members = inside(latest=5)
    members.leave("lobby")
    members.joining("lobby")
    recovery = Recovery(2, OTHER, (publication(1, epoch=OTHER), publication(2, epoch=OTHER)), True)
    entry = members.entered("lobby", recovery, room_for=100)
    assert [p.seq for p in entry.replay] == [1, 2]


def test_a_failed_rejoin_still_remembers_what_was_sent() -> None:
    members = inside(latest=5)
    members.leave("lobby")
    members.joining("lobby")
    members.abandon("lobby")
    members.joining("lobby")
    recovery = Recovery(6, RUN, replayed(4, 5, 6), complete=True)
    assert members.entered("lobby", recovery, room_for=100).replay == replayed(6)


def test_left_rooms_are_remembered_up_to_the_left_limit_oldest_forgotten_first() -> None:
    members = fresh(left_limit=2)
    for room in ("a", "b", "c"):
        members.joining(room)
        members.entered(room, Recovery(5, RUN), room_for=100)
        members.leave(room)
    replays = {}
    for room in ("a", "b", "c"):
        members.joining(room)
        recovery = Recovery(6, RUN, replayed(4, 5, 6, room=room), complete=True)
        replays[room] = [p.seq for p in members.entered(room, recovery, 100).replay]
    assert replays == {"a": [4, 5, 6], "b": [6], "c": [6]}
