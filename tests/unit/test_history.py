"""HistoryStore: room seq counters, the recent-history window, the byte budget, forgetting."""

from __future__ import annotations

import sys

import pytest

from chat.envelope import Draft, HistoryPage, Publication, Recovery
from chat.history import ENTRY_OVERHEAD, HistoryStore

#: A budget no test reaches unless it means to.
PLENTY = 10**9


def draft(room: str = "lobby", text: str = "hi", *, user: str = "ann") -> Draft:
    return Draft(room=room, user=user, text=text, id=f"{room}:{text}", ts=1.5)


#: Every room run of ``store_of`` stores has this epoch, so expectations can name it.
EPOCH = "run-1"


def store_of(*, size: int = 10, ttl: float = 60.0, max_bytes: int = PLENTY) -> HistoryStore:
    return HistoryStore(size=size, ttl=ttl, max_bytes=max_bytes, epochs=lambda: EPOCH)


def publish_many(store: HistoryStore, room: str, count: int, now: float = 0.0) -> list[Publication]:
    return [store.publish(draft(room, f"m{n}"), now) for n in range(count)]


def cost(text: str) -> int:
    return sys.getsizeof(text) + ENTRY_OVERHEAD


# -- seq ------------------------------------------------------------------------------


def test_publish_gives_the_draft_its_rooms_seq() -> None:
    store = store_of()
    published = store.publish(
        Draft(room="lobby", user="ann", text="hello", id="c1", ts=12.5), now=3.0
    )
    assert published == Publication(
        room="lobby", seq=1, user="ann", text="hello", id="c1", ts=12.5, epoch=EPOCH
    )


def test_seq_rises_by_exactly_one_per_publish() -> None:
    store = store_of()
    assert [p.seq for p in publish_many(store, "lobby", 5)] == [1, 2, 3, 4, 5]


def test_each_room_counts_its_own_seq() -> None:
    store = store_of()
    rooms = ["a", "b", "a", "a", "b", "c"]
    seqs = [(room, store.publish(draft(room), 0.0).seq) for room in rooms]
    assert seqs == [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2), ("c", 1)]


@pytest.mark.parametrize(("size", "ttl"), [(10, 60.0), (0, 60.0), (10, 0.0), (0, 0.0)])
def test_seq_rises_whether_or_not_history_is_kept(size: int, ttl: float) -> None:
    store = store_of(size=size, ttl=ttl)
    assert [p.seq for p in publish_many(store, "lobby", 3)] == [1, 2, 3]


def test_latest_of_an_unknown_room_is_zero() -> None:
    assert store_of().latest("nowhere") == 0


def test_latest_is_the_last_seq_given_in_the_room() -> None:
    store = store_of()
    publish_many(store, "a", 4)
    publish_many(store, "b", 2)
    assert (store.latest("a"), store.latest("b")) == (4, 2)


# -- recover ----------------------------------------------------------------------------

# A room "lobby" with seq 1..5 published at t=0, of which a size-3 window keeps 3, 4, 5.
RECOVER_CASES = [
    # (id, room, since, latest, seqs returned, complete)
    ("no-since-gives-latest-only", "lobby", None, 5, [], False),
    ("since-latest-is-complete-and-empty", "lobby", 5, 5, [], True),
    ("since-one-before-latest", "lobby", 4, 5, [5], True),
    ("since-at-window-start", "lobby", 2, 5, [3, 4, 5], True),
    ("since-just-older-than-window", "lobby", 1, 5, [], False),
    ("since-zero-older-than-window", "lobby", 0, 5, [], False),
    ("since-negative", "lobby", -1, 5, [], False),
    ("since-above-latest", "lobby", 6, 5, [], False),
    ("since-far-above-latest", "lobby", 1000, 5, [], False),
    ("unknown-room-no-since", "nowhere", None, 0, [], False),
    ("unknown-room-with-since", "nowhere", 3, 0, [], False),
]


@pytest.mark.parametrize(
    ("room", "since", "latest", "seqs", "complete"),
    [case[1:] for case in RECOVER_CASES],
    ids=[case[0] for case in RECOVER_CASES],
)
def test_recover_returns_all_messages_after_since_or_none(
    room: str, since: int | None, latest: int, seqs: list[int], complete: bool
) -> None:
    store = store_of(size=3, ttl=60.0)
    published = publish_many(store, "lobby", 5, now=0.0)
    expected = Recovery(latest, EPOCH, tuple(published[seq - 1] for seq in seqs), complete=complete)
    assert store.recover(room, since, now=1.0) == expected


def test_recover_since_zero_in_a_room_never_published_is_complete_and_empty() -> None:
    # latest is 0 and nothing was ever published: nothing was missed.
    assert store_of().recover("nowhere", 0, now=0.0) == Recovery(0, EPOCH, (), complete=True)


def test_recover_within_the_window_returns_every_message_in_order() -> None:
    store = store_of(size=100)
    published = publish_many(store, "lobby", 20)
    assert store.recover("lobby", 0, now=0.0) == Recovery(
        20, EPOCH, tuple(published), complete=True
    )


def test_recover_returns_only_the_asked_rooms_messages() -> None:
    store = store_of()
    a1 = store.publish(draft("a", "a1"), 0.0)
    store.publish(draft("b", "b1"), 0.0)
    a2 = store.publish(draft("a", "a2"), 0.0)
    assert store.recover("a", 0, now=0.0) == Recovery(2, EPOCH, (a1, a2), complete=True)


# -- the window: size -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "complete"),
    [(0, False), (1, False), (2, True), (3, True), (4, True)],
)
def test_history_keeps_only_the_last_size_messages(since: int, complete: bool) -> None:
    store = store_of(size=3)
    published = publish_many(store, "lobby", 5)
    recovery = store.recover("lobby", since, now=0.0)
    assert recovery.complete is complete
    assert recovery.publications == (tuple(published[since:]) if complete else ())


def test_size_limit_applies_per_room() -> None:
    store = store_of(size=2)
    a = publish_many(store, "a", 2)
    publish_many(store, "b", 5)
    assert store.recover("a", 0, now=0.0) == Recovery(2, EPOCH, tuple(a), complete=True)


@pytest.mark.parametrize(("size", "ttl"), [(0, 60.0), (10, 0.0), (0, 0.0)])
def test_size_zero_or_ttl_zero_keeps_no_history(size: int, ttl: float) -> None:
    store = store_of(size=size, ttl=ttl)
    publish_many(store, "lobby", 3)
    assert store.recover("lobby", 2, now=0.0) == Recovery(3, EPOCH)
    assert store.bytes == 0


# -- the window: ttl --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "complete"),
    [(0.0, True), (9.0, True), (9.999, True), (10.0, False), (10.001, False), (1000.0, False)],
)
def test_an_entry_expires_when_exactly_ttl_old(age: float, complete: bool) -> None:
    # recover keeps entries with at > now - ttl: one exactly ttl old has expired.
    store = store_of(ttl=10.0)
    only = store.publish(draft(), now=100.0)
    recovery = store.recover("lobby", 0, now=100.0 + age)
    expected = Recovery(1, EPOCH, (only,), complete=True) if complete else Recovery(1, EPOCH)
    assert recovery == expected


@pytest.mark.parametrize("purged", [False, True], ids=["before-purge", "after-purge"])
def test_an_expired_entry_makes_its_recovery_incomplete(purged: bool) -> None:
    store = store_of(ttl=10.0)
    store.publish(draft(text="old"), now=0.0)
    store.publish(draft(text="new"), now=5.0)
    if purged:
        store.purge(now=10.0)
    assert store.recover("lobby", 0, now=10.0) == Recovery(2, EPOCH)


def test_entries_after_an_expired_one_still_recover() -> None:
    store = store_of(ttl=10.0)
    store.publish(draft(text="old"), now=0.0)
    new = store.publish(draft(text="new"), now=5.0)
    assert store.recover("lobby", 1, now=10.0) == Recovery(2, EPOCH, (new,), complete=True)


# -- the byte budget --------------------------------------------------------------------


def test_bytes_counts_each_kept_text_plus_the_entry_overhead() -> None:
    store = store_of()
    store.publish(draft("a", "abc"), 0.0)
    store.publish(draft("b", "héllo"), 0.0)
    assert store.bytes == cost("abc") + cost("héllo")


def test_bytes_drop_when_the_size_limit_drops_a_message() -> None:
    store = store_of(size=2)
    for text in ["a", "bb", "ccc"]:
        store.publish(draft(text=text), 0.0)
    assert store.bytes == cost("bb") + cost("ccc")


def test_a_store_exactly_at_its_byte_budget_keeps_everything() -> None:
    store = store_of(max_bytes=2 * cost("x"))
    a = store.publish(draft("a", "x"), 0.0)
    b = store.publish(draft("b", "x"), 1.0)
    assert store.recover("a", 0, now=1.0) == Recovery(1, EPOCH, (a,), complete=True)
    assert store.recover("b", 0, now=1.0) == Recovery(1, EPOCH, (b,), complete=True)
    assert store.bytes == 2 * cost("x")


def test_over_the_byte_budget_the_oldest_message_across_rooms_goes_first() -> None:
    store = store_of(max_bytes=2 * cost("x"))
    store.publish(draft("a", "x"), 0.0)
    b = store.publish(draft("b", "x"), 1.0)
    c = store.publish(draft("c", "x"), 2.0)
    assert store.recover("a", 0, now=2.0) == Recovery(1, EPOCH)
    assert store.recover("b", 0, now=2.0) == Recovery(1, EPOCH, (b,), complete=True)
    assert store.recover("c", 0, now=2.0) == Recovery(1, EPOCH, (c,), complete=True)
    assert store.bytes == 2 * cost("x")


def test_a_room_whose_needed_entries_were_evicted_no_longer_recovers() -> None:
    store = store_of(max_bytes=3 * cost("m0"))
    a = publish_many(store, "a", 3, now=0.0)
    # b's message costs as much as two of a's: a's oldest two make room for it.
    size = 2 * cost("m0") - ENTRY_OVERHEAD - sys.getsizeof("")
    store.publish(draft("b", "b" * size), now=1.0)
    assert store.recover("a", 0, now=1.0) == Recovery(3, EPOCH)
    assert store.recover("a", 1, now=1.0) == Recovery(3, EPOCH)
    assert store.recover("a", 2, now=1.0) == Recovery(3, EPOCH, (a[2],), complete=True)


def test_a_message_larger_than_the_whole_budget_is_not_kept() -> None:
    store = store_of(max_bytes=cost("x"))
    published = store.publish(draft(text="xx"), 0.0)
    assert published.seq == 1
    assert store.recover("lobby", 0, now=0.0) == Recovery(1, EPOCH)
    assert store.bytes == 0


def test_bytes_return_to_zero_once_everything_expired_and_was_purged() -> None:
    store = store_of(size=2, ttl=10.0)
    for room in ["a", "b", "c"]:
        publish_many(store, room, 5, now=1.0)
    assert store.bytes > 0
    store.purge(now=11.0)
    assert store.bytes == 0


# -- hold, release, purge ---------------------------------------------------------------


def test_a_held_room_keeps_its_seq_after_its_history_expires() -> None:
    store = store_of(ttl=10.0)
    store.hold("lobby")
    publish_many(store, "lobby", 3, now=0.0)
    store.purge(now=100.0)
    assert (store.latest("lobby"), len(store)) == (3, 1)
    assert store.publish(draft(), now=100.0).seq == 4


def test_a_held_room_with_no_publishes_is_known() -> None:
    store = store_of()
    store.hold("lobby")
    store.purge(now=1000.0)
    assert (store.latest("lobby"), len(store)) == (0, 1)


@pytest.mark.parametrize(
    ("purge_at", "latest", "rooms"),
    [(9.999, 3, 1), (10.0, 0, 0), (50.0, 0, 0)],
)
def test_an_unheld_room_is_forgotten_once_its_last_publish_is_ttl_old(
    purge_at: float, latest: int, rooms: int
) -> None:
    store = store_of(ttl=10.0)
    publish_many(store, "lobby", 3, now=0.0)
    store.purge(now=purge_at)
    assert (store.latest("lobby"), len(store)) == (latest, rooms)


def test_an_unheld_room_with_unexpired_history_is_kept() -> None:
    store = store_of(ttl=10.0)
    store.publish(draft(text="old"), now=0.0)
    new = store.publish(draft(text="new"), now=8.0)
    store.purge(now=10.0)
    assert (store.latest("lobby"), len(store)) == (2, 1)
    assert store.recover("lobby", 1, now=10.0) == Recovery(2, EPOCH, (new,), complete=True)


@pytest.mark.parametrize(("purge_at", "latest"), [(5.0, 1), (10.0, 0)])
def test_an_unheld_room_whose_entries_were_evicted_is_kept_until_its_last_publish_expires(
    purge_at: float, latest: int
) -> None:
    store = store_of(ttl=10.0, max_bytes=cost("x"))
    store.publish(draft(text="too long for the budget"), now=0.0)
    store.purge(now=purge_at)
    assert store.latest("lobby") == latest


def test_a_forgotten_room_starts_again_and_an_old_since_does_not_recover() -> None:
    store = store_of(ttl=10.0)
    publish_many(store, "lobby", 3, now=0.0)
    store.purge(now=10.0)
    assert store.publish(draft(), now=20.0).seq == 1
    assert store.recover("lobby", 3, now=20.0) == Recovery(1, EPOCH)


def test_a_released_room_is_forgotten_like_one_never_held() -> None:
    store = store_of(ttl=10.0)
    store.hold("lobby")
    publish_many(store, "lobby", 3, now=0.0)
    store.release("lobby")
    store.purge(now=10.0)
    assert (store.latest("lobby"), len(store)) == (0, 0)


def test_a_room_held_twice_is_kept_until_released_twice() -> None:
    store = store_of(ttl=10.0)
    store.hold("lobby")
    store.hold("lobby")
    publish_many(store, "lobby", 3, now=0.0)
    store.release("lobby")
    store.purge(now=10.0)
    assert store.latest("lobby") == 3
    store.release("lobby")
    store.purge(now=10.0)
    assert store.latest("lobby") == 0


def test_extra_releases_do_not_cancel_a_later_hold() -> None:
    store = store_of(ttl=10.0)
    store.hold("lobby")
    store.release("lobby")
    store.release("lobby")
    store.hold("lobby")
    publish_many(store, "lobby", 3, now=0.0)
    store.purge(now=10.0)
    assert store.latest("lobby") == 3


def test_releasing_an_unknown_room_changes_nothing() -> None:
    store = store_of()
    store.release("nowhere")
    assert (store.latest("nowhere"), len(store)) == (0, 0)


def test_purge_forgets_only_the_expired_unheld_rooms() -> None:
    store = store_of(ttl=10.0)
    store.hold("held")
    for room in ["held", "stale"]:
        publish_many(store, room, 2, now=0.0)
    publish_many(store, "fresh", 2, now=5.0)
    store.purge(now=10.0)
    latest = {room: store.latest(room) for room in ["held", "stale", "fresh"]}
    assert (latest, len(store)) == ({"held": 2, "stale": 0, "fresh": 2}, 2)


# -- stale-order compaction -------------------------------------------------------------


def test_many_publishes_to_a_small_room_keep_the_order_bounded() -> None:
    store = store_of(size=2, ttl=1e9)
    for n in range(5000):
        store.publish(draft(text="x"), now=float(n))
        # _order is private, but it is the memory this test is about: it gains a
        # slot per publish and only compaction takes back the slots of messages
        # the size limit already dropped. No public view shows it.
        assert len(store._order) <= 2 * 2 + 1024 + 1
    assert store.bytes == 2 * cost("x")


def test_a_small_room_still_recovers_after_many_publishes() -> None:
    store = store_of(size=2, ttl=1e9)
    published = publish_many(store, "lobby", 5000)
    assert store.recover("lobby", 4998, now=0.0) == Recovery(
        5000, EPOCH, tuple(published[-2:]), complete=True
    )
    assert store.recover("lobby", 4997, now=0.0) == Recovery(5000, EPOCH)


def test_the_byte_budget_still_evicts_the_oldest_right_after_a_compaction() -> None:
    store = store_of(size=2, ttl=1e9, max_bytes=3 * cost("x"))
    # busy is created before old, so a compaction that followed the rooms rather
    # than publish times would put busy's entries ahead of old's.
    store.publish(draft("busy", "x"), now=0.0)
    store.publish(draft("old", "x"), now=0.5)
    busy = 1
    # Publish until a compaction has just run. _order is private, but its length
    # shrinking is compaction's only trace; right after one it holds exactly the
    # three kept entries and no stale slot.
    before = len(store._order)
    while busy < 5000:
        busy += 1
        store.publish(draft("busy", "x"), now=float(busy))
        if len(store._order) < before:
            break
        before = len(store._order)
    assert len(store._order) == 3
    # old's message and busy's last two fill the budget; one more evicts old's.
    new = store.publish(draft("new", "x"), now=10_000.0)
    assert store.recover("old", 0, now=10_000.0) == Recovery(1, EPOCH)
    assert store.recover("busy", busy - 2, now=10_000.0).complete
    assert store.recover("new", 0, now=10_000.0) == Recovery(1, EPOCH, (new,), complete=True)
    assert store.bytes == 3 * cost("x")


# -- reading (the server API) ------------------------------------------------------------


def test_read_leaves_out_expired_messages_and_says_the_history_no_longer_covers_since() -> None:
    store = store_of(ttl=60.0)
    old = store.publish(draft(text="old"), 0.0)
    new = store.publish(draft(text="new"), 50.0)
    assert store.read("lobby", 0, 10, 59.0) == HistoryPage(2, EPOCH, (old, new), complete=True)
    assert store.read("lobby", 0, 10, 61.0) == HistoryPage(2, EPOCH, (new,), complete=False)
    assert store.read("lobby", 1, 10, 61.0) == HistoryPage(2, EPOCH, (new,), complete=True)


def test_read_of_an_unknown_room_creates_nothing() -> None:
    store = store_of()
    assert store.read("nowhere", 0, 10, 0.0) == HistoryPage(0, None, complete=True)
    assert len(store) == 0
    assert store.latest_run("nowhere") is None
