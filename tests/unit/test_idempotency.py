"""RecentSends: which sends a retry repeats, and how much is remembered."""

from __future__ import annotations

from chat.envelope import Draft
from chat.idempotency import RecentSends, Sent, text_digest
from chat.protocol import FrameId


def draft(
    id: FrameId = "m-1", *, user: str = "ann", room: str = "lobby", text: str = "hi"
) -> Draft:
    return Draft(room=room, user=user, text=text, id=id, ts=0.0)


def test_a_retry_finds_where_the_first_send_landed() -> None:
    sends = RecentSends(window=60)
    sends.remember(draft(), seq=7, epoch="e1", now=0.0)
    assert sends.find(draft(), now=59.0) == Sent(7, "e1", text_digest("hi"), 0.0)


def test_a_send_without_an_id_is_never_a_retry() -> None:
    sends = RecentSends(window=60)
    sends.remember(draft(None), seq=1, epoch="e1", now=0.0)
    assert len(sends) == 0
    assert sends.find(draft(None), now=0.0) is None


def test_another_text_room_user_or_id_is_not_a_retry() -> None:
    sends = RecentSends(window=60)
    sends.remember(draft(), seq=1, epoch="e1", now=0.0)
    for other in [draft(text="hi!"), draft(room="games"), draft(user="bo"), draft(7), draft("m-2")]:
        assert sends.find(other, now=1.0) is None


def test_a_reused_id_counts_with_its_latest_text_only() -> None:
    sends = RecentSends(window=60)
    sends.remember(draft(text="first"), seq=1, epoch="e1", now=0.0)
    sends.remember(draft(text="second"), seq=2, epoch="e1", now=1.0)
    assert len(sends) == 1
    assert sends.find(draft(text="first"), now=2.0) is None
    found = sends.find(draft(text="second"), now=2.0)
    assert found is not None and found.seq == 2


def test_a_send_is_forgotten_once_the_window_has_passed() -> None:
    sends = RecentSends(window=60)
    sends.remember(draft(), seq=1, epoch="e1", now=0.0)
    assert sends.find(draft(), now=60.0) is None  # found no more, even before a purge
    sends.purge(now=59.0)
    assert len(sends) == 1
    sends.purge(now=60.0)
    assert len(sends) == 0


def test_a_window_of_zero_remembers_nothing() -> None:
    sends = RecentSends(window=0)
    sends.remember(draft(), seq=1, epoch="e1", now=0.0)
    assert len(sends) == 0
    assert sends.find(draft(), now=0.0) is None


def test_each_user_keeps_only_its_latest_ids() -> None:
    sends = RecentSends(window=60, per_user=3)
    for n in range(5):
        sends.remember(draft(n), seq=n, epoch="e1", now=float(n))
    sends.remember(draft(0, user="bo"), seq=9, epoch="e1", now=5.0)
    assert [n for n in range(5) if sends.find(draft(n), now=6.0)] == [2, 3, 4]
    assert sends.find(draft(0, user="bo"), now=6.0) is not None
    assert len(sends) == 4


def test_all_users_together_keep_at_most_max_ids_the_oldest_going_first() -> None:
    sends = RecentSends(window=60, per_user=10, max_ids=4)
    for n, user in enumerate(["ann", "bo", "ann", "cy", "bo", "ann"]):
        sends.remember(draft(n, user=user), seq=n, epoch="e1", now=float(n))
    kept = [(n, user) for n, user in enumerate(["ann", "bo", "ann", "cy", "bo", "ann"])]
    found = [(n, user) for n, user in kept if sends.find(draft(n, user=user), now=7.0)]
    assert found == [(2, "ann"), (3, "cy"), (4, "bo"), (5, "ann")]
    # Whatever was dropped first, the rest expire in order and leave nothing behind.
    sends.purge(now=100.0)
    assert len(sends) == 0
