"""Rooms' sequences and histories in Redis: publishing, recovering, reading the latest ``seq``.

Publishing is one Lua script (``scripts/publish.lua``) per round trip, for
every draft of it: the retry check, the room's next ``seq``, the stream entry
and the sent-id record of each, then one ``PUBLISH`` per room (its message, or
a JSON array of its messages in ``seq`` order: :func:`parse_messages`).
A room's ``epoch`` is its stored run name plus the Redis server's ``run_id``:
a Redis that restarted (empty, or from an older snapshot) starts new runs, so
no ``seq`` is ever reused under the same epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import orjson

from chat.brokers.base import BrokerUnavailable
from chat.brokers.redis import keys
from chat.brokers.redis.link import Link
from chat.envelope import Draft, PresenceChange, Publication, Recovery, new_epoch, recovery
from chat.idempotency import IDS_PER_USER, text_digest

#: How long a room's ``seq`` and history live without a publish, at least.
MIN_ROOM_TTL = 60.0
#: Drafts in one round trip at most: a caller that fills a batch closes it.
MAX_BATCH = 256


class _Batch:
    """The drafts of one round trip to Redis, and once it is back, their outcomes."""

    __slots__ = ("answers", "done", "drafts")

    def __init__(self) -> None:
        self.drafts: list[Draft] = []
        self.answers: list[Publication | BrokerUnavailable] = []
        self.done = anyio.Event()


class Streams:
    """The rooms' ``seq``, ``epoch`` and history in Redis."""

    def __init__(
        self, link: Link, *, history_size: int, history_ttl: float, send_id_window: float
    ) -> None:
        self._link = link
        self._history_size = history_size if history_ttl else 0
        self._history_ttl = history_ttl
        self.room_ttl_ms = int(max(history_ttl, MIN_ROOM_TTL) * 1000)
        self._send_id_window_ms = int(send_id_window * 1000)
        #: The Redis server's run, part of every epoch (set on each subscription).
        self.run = ""
        #: The round trip that callers of this turn of the event loop join, if any.
        self._batch: _Batch | None = None

    async def publish(self, draft: Draft) -> Publication:
        """Publish ``draft`` (a retry of a sent id comes back ``duplicate``)."""
        found = (await self.publish_many([draft]))[0]
        if isinstance(found, BrokerUnavailable):
            raise found
        return found

    async def publish_many(self, drafts: Sequence[Draft]) -> list[Publication | BrokerUnavailable]:
        """Publish ``drafts`` in order in one round trip: what :meth:`publish` of each
        in turn gives, or the :class:`BrokerUnavailable` that refused it.

        The drafts of every caller in the same turn of the event loop (the bursts
        of several sessions) share that round trip, one script call: each
        caller's drafts stay together and in its order, and each room's drafts
        reach the subscribed nodes as one pub/sub message. A call that gets no
        answer fails every draft as uncertain: each may still be published,
        once, like a single :meth:`publish` that timed out; an error Redis
        answered one draft's command with fails only that draft.
        """
        if not drafts:
            return []
        batch = self._batch
        leads = batch is None
        if batch is None:
            batch = self._batch = _Batch()
        first = len(batch.drafts)
        batch.drafts.extend(drafts)
        if len(batch.drafts) >= MAX_BATCH:
            self._batch = None  # full: the next caller starts another
        if leads:
            # Shielded: the other callers wait for this one's round trip, which
            # its own cancellation (its session closing) must not cut short.
            # Bounded all the same: the call gives up within the command timeout.
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()  # the other sessions of this turn join
                if self._batch is batch:
                    self._batch = None
                try:
                    batch.answers = await self._publish_batch(batch.drafts)
                except BaseException:  # a bug: the others must not wait forever
                    failed = BrokerUnavailable("publish failed", uncertain=True)
                    batch.answers = [failed] * len(batch.drafts)
                    raise
                finally:
                    batch.done.set()
        else:
            await batch.done.wait()
        return batch.answers[first : first + len(drafts)]

    async def _publish_batch(self, drafts: list[Draft]) -> list[Publication | BrokerUnavailable]:
        """Publish ``drafts`` in order, in one call of ``scripts/publish.lua``."""
        keys_of: list[str] = []
        args: list[str | int] = [
            self._history_size,
            self.room_ttl_ms,
            self.run,
            self._send_id_window_ms,
            IDS_PER_USER,
        ]
        # A fresh epoch per room (used only by a room without a run), not per draft.
        epochs: dict[str, str] = {}
        for draft in drafts:
            room, user = draft.room, draft.user
            keys_of += (keys.meta(room), keys.log(room), keys.sent(user), keys.sent_order(user))
            epoch = epochs.get(room)
            if epoch is None:
                epoch = epochs[room] = new_epoch()
            fields = {
                "room": room,
                "user": user,
                "text": draft.text,
                "id": draft.id,
                "ts": draft.ts,
            }
            remembered = draft.id is not None and self._send_id_window_ms > 0
            args += (
                orjson.dumps(fields).decode()[1:],
                epoch,
                keys.channel(room),
                # The id as a field: the room first (no room holds SEP), then the id.
                f"{room}{keys.SEP}{orjson.dumps(draft.id).decode()}" if remembered else "",
                text_digest(draft.text) if remembered else "",
            )
        try:
            answers = await self._link.call(
                self._link.scripts["publish"](keys=keys_of, args=args), uncertain=True
            )
        except BrokerUnavailable as error:
            return [error] * len(drafts)
        found: list[Publication | BrokerUnavailable] = []
        for draft, answer in zip(drafts, answers, strict=True):
            if isinstance(answer, list):
                found.append(_published(draft, answer))
            else:  # the text of an error Redis answered one of this draft's commands with
                self._link.log_once(f"redis refused a command: {answer}")
                found.append(BrokerUnavailable("redis refused the command"))
        return found

    async def recover(self, room: str, since: int | None, epoch: str | None) -> Recovery:
        """The room's latest ``seq`` and ``epoch`` (starting a run if it has none), and
        with ``since`` the kept messages after it."""
        latest, current, kept = await self.kept_after(room, since)
        return recovery(latest, current, since, epoch, lambda: kept)

    async def latest(self, room: str) -> tuple[str, int] | None:
        """The room's ``(epoch, seq)``, or None if it has no run; changes nothing."""
        stored, seq = await self._link.call(
            self._link.commands.hmget(keys.meta(room), "epoch", "seq")
        )
        if stored is None:
            return None
        return f"{stored!s}.{self.run}", int(seq or 0)

    async def kept_after(self, room: str, since: int | None) -> tuple[int, str, list[Publication]]:
        """The room's latest seq and epoch, and its kept messages after ``since``, in order."""
        seq, current, now_ms, entries = await self._link.call(
            self._link.scripts["recover"](
                keys=[keys.meta(room), keys.log(room)],
                args=[new_epoch(), self.room_ttl_ms, "" if since is None else since, self.run],
            )
        )
        current = str(current)
        # Redis time decides what is too old: no node's clock skews it.
        horizon_ms = int(now_ms) - self._history_ttl * 1000
        kept: list[Publication] = []
        for entry_id, raw in reversed(list(zip(entries[::2], entries[1::2], strict=True))):
            publication = parse_publication(orjson.loads(raw))
            fresh = int(str(entry_id).partition("-")[0]) > horizon_ms
            if (
                fresh
                and publication.epoch == current
                and since is not None
                and publication.seq > since
            ):
                kept.append(publication)
        return int(seq), current, kept


def _published(draft: Draft, found: Any) -> Publication:
    """``draft`` as ``scripts/publish.lua`` answered: ``[seq, epoch, duplicate]``."""
    seq, epoch, duplicate = found
    return draft.published(int(seq), str(epoch), duplicate=bool(duplicate))


def parse_messages(raw: str | bytes) -> list[Publication | PresenceChange] | None:
    """A message of a room's channel: a publication (``"k": "m"``, written by
    ``scripts/publish.lua``), a presence change (``"k": "p"``), or a JSON array of
    publications (a round trip's of the room, in ``seq`` order); None if malformed."""
    try:
        data = orjson.loads(raw)
        if isinstance(data, list):
            return [parse_publication(item) for item in data]
        if data.get("k") == "p":
            return [PresenceChange(data["room"], data["event"], data["user"], data["origin"])]
        return [parse_publication(data)]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None


def parse_publication(data: dict[str, Any]) -> Publication:
    """A publication from its JSON on the bus; raises ``KeyError``/``ValueError`` if malformed."""
    return Publication(
        room=data["room"],
        seq=int(data["seq"]),
        user=data["user"],
        text=data["text"],
        id=data.get("id"),
        ts=float(data["ts"]),
        epoch=data["epoch"],
    )
