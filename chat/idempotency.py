"""Idempotent sends: the recent publications that carried a client ``id``. Pure.

A client that got no ``ack`` (an ``unavailable`` error, or a lost connection)
cannot know whether its message was published; it retries with the same
``id``. A retry is the same user sending the same ``id`` to the same room with
the same text within the window: it is answered with the original ``seq`` and
publishes nothing. A reused ``id`` with another text or room is a new message.

:class:`RecentSends` is the memory broker's record; the Redis broker keeps the
same record in Redis (see :mod:`chat.brokers.redis`), so a retry is
recognised on any node.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass

from chat.envelope import Draft
from chat.protocol import FrameId

#: Ids remembered per user at most (the oldest are forgotten first).
IDS_PER_USER = 1000
#: Ids the memory broker remembers at most over all users.
IDS_MAX = 100_000


def text_digest(text: str) -> str:
    """A short fingerprint of a message's text: a reused ``id`` with another text is new."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Sent:
    """Where a message with an ``id`` landed: its ``seq`` in the room's run ``epoch``."""

    seq: int
    epoch: str
    digest: str
    at: float


_Key = tuple[str, str, FrameId]


class RecentSends:
    """Each user's recent sends with an ``id``, for ``window`` seconds.

    Bounded three ways: ``window`` seconds, ``per_user`` ids per user and
    ``max_ids`` in all; the oldest go first. ``window`` 0 remembers nothing.
    """

    def __init__(
        self, *, window: float, per_user: int = IDS_PER_USER, max_ids: int = IDS_MAX
    ) -> None:
        self._window = window
        self._per_user = per_user
        self._max_ids = max_ids
        #: Every remembered send, oldest first.
        self._sent: OrderedDict[_Key, Sent] = OrderedDict()
        #: Each user's keys, oldest first (the same order as in ``_sent``).
        self._by_user: dict[str, deque[_Key]] = {}

    def __len__(self) -> int:
        return len(self._sent)

    def find(self, draft: Draft, now: float) -> Sent | None:
        """The earlier send that ``draft`` retries, if it is still remembered."""
        if draft.id is None or not self._window:
            return None
        found = self._sent.get((draft.user, draft.room, draft.id))
        if found is None or found.at <= now - self._window:
            return None
        return found if found.digest == text_digest(draft.text) else None

    def remember(self, draft: Draft, seq: int, epoch: str, now: float) -> None:
        """Record that ``draft`` (with an ``id``) was published as ``seq`` in ``epoch``."""
        if draft.id is None or not self._window:
            return
        key = (draft.user, draft.room, draft.id)
        keys = self._by_user.setdefault(draft.user, deque())
        if self._sent.pop(key, None) is not None:
            keys.remove(key)  # a reused id: only its latest send counts
        self._sent[key] = Sent(seq, epoch, text_digest(draft.text), now)
        keys.append(key)
        if len(keys) > self._per_user:
            del self._sent[keys.popleft()]
        while len(self._sent) > self._max_ids:
            self._forget_oldest()

    def purge(self, now: float) -> None:
        """Forget the sends older than the window."""
        horizon = now - self._window
        while self._sent and next(iter(self._sent.values())).at <= horizon:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        key, _ = self._sent.popitem(last=False)
        user = key[0]
        keys = self._by_user[user]
        keys.popleft()  # the oldest of all is its user's oldest
        if not keys:
            del self._by_user[user]
