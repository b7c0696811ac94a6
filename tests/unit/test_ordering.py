"""Where a publication stands relative to a room cursor (chat/ordering.py), with plain values."""

from __future__ import annotations

import pytest

from chat.envelope import Publication
from chat.ordering import Cursor, Place

RUN = "run-1"
OTHER = "run-2"


def publication(seq: int, epoch: str = RUN) -> Publication:
    return Publication("lobby", seq, "alice", f"m{seq}", None, 0.0, epoch)


@pytest.mark.parametrize(
    ("epoch", "seq", "place"),
    [
        (RUN, 6, Place.NEXT),
        (RUN, 7, Place.AHEAD),
        (RUN, 1000, Place.AHEAD),
        (RUN, 5, Place.SEEN),
        (RUN, 4, Place.SEEN),
        (RUN, 1, Place.SEEN),
        (RUN, 0, Place.SEEN),
        (OTHER, 6, Place.OTHER_RUN),
        (OTHER, 5, Place.OTHER_RUN),
        (OTHER, 1, Place.OTHER_RUN),
        (OTHER, 1000, Place.OTHER_RUN),
    ],
)
def test_a_publication_is_placed_by_its_run_and_seq(epoch: str, seq: int, place: Place) -> None:
    assert Cursor(RUN, 5).place(publication(seq, epoch)) is place


@pytest.mark.parametrize(("seq", "place"), [(1, Place.NEXT), (2, Place.AHEAD), (0, Place.SEEN)])
def test_a_cursor_at_zero_expects_seq_one_next(seq: int, place: Place) -> None:
    assert Cursor(RUN, 0).place(publication(seq)) is place


def test_placing_changes_nothing() -> None:
    cursor = Cursor(RUN, 5)
    for seq, epoch in [(6, RUN), (9, RUN), (2, RUN), (6, OTHER)]:
        cursor.place(publication(seq, epoch))
    assert (cursor.epoch, cursor.seq) == (RUN, 5)


def test_advance_moves_to_the_publication_handed_on() -> None:
    cursor = Cursor(RUN, 5)
    cursor.advance(publication(6))
    assert cursor.seq == 6
    assert cursor.place(publication(6)) is Place.SEEN
    assert cursor.place(publication(7)) is Place.NEXT


def test_advance_over_a_gap_leaves_the_missed_ones_behind() -> None:
    cursor = Cursor(RUN, 5)
    cursor.advance(publication(9))
    assert cursor.seq == 9
    assert cursor.place(publication(7)) is Place.SEEN
    assert cursor.place(publication(10)) is Place.NEXT


def test_restart_follows_a_new_run_from_its_seq() -> None:
    cursor = Cursor(RUN, 50)
    cursor.restart(OTHER, 2)
    assert (cursor.epoch, cursor.seq) == (OTHER, 2)
    assert cursor.place(publication(3, OTHER)) is Place.NEXT
    assert cursor.place(publication(2, OTHER)) is Place.SEEN
    # The old run is now the other one, however high its seq.
    assert cursor.place(publication(51, RUN)) is Place.OTHER_RUN


def test_a_cursor_shows_its_run_and_seq() -> None:
    assert repr(Cursor(RUN, 5)) == "Cursor('run-1', 5)"
