"""Roster: sessions counted per user per room, so presence changes once per user."""

from __future__ import annotations

import pytest

from chat.roster import Roster


def test_add_is_true_only_for_a_users_first_session_in_a_room() -> None:
    roster = Roster()
    assert [roster.add("lobby", "ann") for _ in range(3)] == [True, False, False]


def test_remove_is_true_only_for_a_users_last_session_in_a_room() -> None:
    roster = Roster()
    for _ in range(3):
        roster.add("lobby", "ann")
    assert [roster.remove("lobby", "ann") for _ in range(3)] == [False, False, True]


def test_each_users_first_session_counts_separately() -> None:
    roster = Roster()
    assert [roster.add("lobby", user) for user in ["ann", "bob", "ann"]] == [True, True, False]


def test_counts_in_different_rooms_are_independent() -> None:
    roster = Roster()
    assert (roster.add("a", "ann"), roster.add("b", "ann")) == (True, True)
    assert roster.remove("a", "ann") is True
    assert (roster.users("a"), roster.users("b"), roster.sessions("b", "ann")) == ([], ["ann"], 1)


def test_a_user_who_left_and_comes_back_is_first_again() -> None:
    roster = Roster()
    roster.add("lobby", "ann")
    roster.remove("lobby", "ann")
    assert roster.add("lobby", "ann") is True


@pytest.mark.parametrize(
    ("room", "user"),
    [("nowhere", "ann"), ("lobby", "carol"), ("lobby", "gone")],
    ids=["unknown-room", "unknown-user", "user-already-left"],
)
def test_removing_an_absent_user_returns_false_and_changes_nothing(room: str, user: str) -> None:
    roster = Roster()
    roster.add("lobby", "ann")
    roster.add("lobby", "bob")
    roster.add("lobby", "bob")
    roster.add("lobby", "gone")
    roster.remove("lobby", "gone")
    assert roster.remove(room, user) is False
    assert roster.users("lobby") == ["ann", "bob"]
    assert (roster.sessions("lobby", "ann"), roster.sessions("lobby", "bob")) == (1, 2)
    assert roster.users("nowhere") == []


def test_users_lists_each_user_once_in_arrival_order() -> None:
    roster = Roster()
    for user in ["bob", "ann", "bob", "carol", "ann"]:
        roster.add("lobby", user)
    assert roster.users("lobby") == ["bob", "ann", "carol"]


def test_a_user_who_leaves_and_returns_is_listed_last() -> None:
    roster = Roster()
    for user in ["ann", "bob"]:
        roster.add("lobby", user)
    roster.remove("lobby", "ann")
    roster.add("lobby", "ann")
    assert roster.users("lobby") == ["bob", "ann"]


def test_users_keeps_a_user_with_sessions_left() -> None:
    roster = Roster()
    roster.add("lobby", "ann")
    roster.add("lobby", "ann")
    roster.remove("lobby", "ann")
    assert roster.users("lobby") == ["ann"]


def test_users_of_an_unknown_room_is_empty() -> None:
    assert Roster().users("nowhere") == []


def test_an_emptied_room_is_freed() -> None:
    roster = Roster()
    for user in ["ann", "bob"]:
        roster.add("lobby", user)
    for user in ["bob", "ann"]:
        roster.remove("lobby", user)
    assert roster.users("lobby") == []
    # No public view shows the memory a room holds: an empty room left behind
    # would look the same through users().
    assert "lobby" not in roster._rooms


def test_looking_up_an_unknown_room_does_not_create_it() -> None:
    roster = Roster()
    roster.users("nowhere")
    roster.sessions("nowhere", "ann")
    roster.remove("nowhere", "ann")
    # As above: only the private map shows whether a lookup left a room behind.
    assert roster._rooms == {}


@pytest.mark.parametrize(
    ("adds", "removes", "expected"),
    [(0, 0, 0), (1, 0, 1), (3, 0, 3), (3, 1, 2), (3, 3, 0), (1, 2, 0)],
)
def test_sessions_counts_a_users_sessions_in_a_room(adds: int, removes: int, expected: int) -> None:
    roster = Roster()
    roster.add("lobby", "bob")
    for _ in range(adds):
        roster.add("lobby", "ann")
    for _ in range(removes):
        roster.remove("lobby", "ann")
    assert roster.sessions("lobby", "ann") == expected
    assert roster.sessions("lobby", "bob") == 1


def test_sessions_in_an_unknown_room_is_zero() -> None:
    assert Roster().sessions("nowhere", "ann") == 0
