"""What a session answers: to its requests' outcomes, and to a room's new run. Pure.

The third part of :class:`chat.core.SessionCore`, beside its lifecycle and its
:class:`~chat.dialogue.Dialogue`: the ``ack`` of a published ``send``, the
``joined`` of a join (with the replay, then the live messages that waited),
the ``error`` ``unavailable`` of what the broker could not do, and the fresh
``joined`` of a room whose ``seq`` began a new run.
"""

from __future__ import annotations

from collections.abc import Callable

from chat.dialogue import Core
from chat.envelope import PresenceChange, Publication, Recovery, RunStarted, encode_message
from chat.errors import BrokerDown, ErrorCode, FrameError, retry_after_ms
from chat.protocol import Ack, Joined, MemberInfo, encode, error_frame
from chat.requests import Announce, ListMembers, Publish, Subscribe

#: The users a room's members on this node were told are present (``chat.rooms.Rooms.users``).
MembersOf = Callable[[str], list[str]]

#: The ``detail`` of ``error`` ``unavailable`` when nothing was done.
UNAVAILABLE_DETAIL = "the broker is unavailable, nothing was done: try again"
#: ... and when the broker did not answer in time (a ``send`` may still be published, once).
UNCERTAIN_DETAIL = (
    "the broker did not answer in time: a send may still be published;"
    " retry with the same id to get its ack"
)


class Replies:
    """A session's answers; see the module docstring."""

    __slots__ = ("_core", "_members_of", "_send_queue")

    def __init__(
        self,
        core: Core,
        send_queue: int,
        members_of: MembersOf,
    ) -> None:
        self._core = core
        #: ``CHAT_SEND_QUEUE``: what a replay may fill of the outbox.
        self._send_queue = send_queue
        self._members_of = members_of

    def published(self, request: Publish, publication: Publication) -> None:
        """``request`` was published (or was a retry) as ``publication``: the ``ack``
        (a plain-text frame gets none)."""
        if not self._core.plain:
            ack = Ack(id=request.draft.id, room=publication.room, seq=publication.seq)
            self._core.queue(encode(ack))

    def entered(
        self, request: Subscribe, recovery: Recovery, first: bool, users: list[str]
    ) -> None:
        """``joined``, the replay, the live messages that waited; then presence."""
        core = self._core
        room_for = self._send_queue - len(core.outbox)
        entry = core.members.entered(request.room, recovery, room_for)
        self._joined(request.room, entry.seq, entry.epoch, entry.recovered, users)
        for publication in entry.replay:
            core.queue(encode_message(publication))
        for publication, frame in entry.held:
            core.deliver(publication, frame)
        if first:
            session = core.session
            core.request(Announce(PresenceChange(request.room, "join", session.user, session.id)))

    def abandoned(self, request: Subscribe) -> None:
        """The join was cut short (the session is closing): the room is not joined."""
        self._core.members.abandon(request.room)

    def listed(self, request: ListMembers, users: list[str]) -> None:
        """``joined`` for a room the session is in: its position, recovered if ``since`` is it."""
        cursor = self._core.members.cursor(request.room)
        if cursor is None:
            return
        same_run = request.epoch is None or request.epoch == cursor.epoch
        recovered = request.since == cursor.seq and same_run
        self._joined(request.room, cursor.seq, cursor.epoch, recovered, users)

    def restarted(self, run: RunStarted) -> bool:
        """A new run of a joined room: a fresh ``joined``. True when the client knows
        the run's users now: told in ``joined``, or plain text (it hears no presence)."""
        core = self._core
        if not core.members.restart(run.room, run.epoch, run.seq):
            return core.plain
        told = self._joined(run.room, run.seq, run.epoch, False, list(run.users))
        return core.plain or (told and core.closing is None)

    def new_run(self, publication: Publication, frame: str) -> bool:
        """A message of a new run that came without its notice: the notice, then it.

        True when the outbox changed.
        """
        room = publication.room
        seq = publication.seq - 1
        if not self._core.members.restart(room, publication.epoch, seq):
            return False
        told = self._joined(room, seq, publication.epoch, False, self._members_of(room))
        return self._core.deliver(publication, frame) or told

    def _joined(self, room: str, seq: int, epoch: str, recovered: bool, users: list[str]) -> bool:
        """Queue ``joined`` (JSON sessions); True when it was queued."""
        if self._core.plain:
            return False
        members = tuple(MemberInfo(user) for user in users)
        joined = Joined(room=room, seq=seq, epoch=epoch, recovered=recovered, members=members)
        return self._core.queue(encode(joined))

    def failed(self, request: Publish | Subscribe | ListMembers, error: Exception) -> None:
        """The broker could not do ``request`` (:class:`~chat.brokers.BrokerUnavailable`):
        ``error`` ``unavailable``; a plain-text session, or one whose URL room could not
        be joined, is closed 1013 instead."""
        if isinstance(request, Subscribe):
            self._core.members.abandon(request.room)
        if self._core.plain or (isinstance(request, Subscribe) and request.from_url):
            self._core.close(BrokerDown(retry_after_ms=retry_after_ms()))
            return
        self._core.queue(error_frame(unavailable(request, error)))


def unavailable(request: Publish | Subscribe | ListMembers, error: Exception) -> FrameError:
    """The ``error`` ``unavailable`` for a request the broker could not do."""
    frame_id = request.draft.id if isinstance(request, Publish) else request.frame_id
    uncertain = bool(getattr(error, "uncertain", False))
    detail = UNCERTAIN_DETAIL if uncertain else UNAVAILABLE_DETAIL
    return FrameError(ErrorCode.UNAVAILABLE, detail, frame_id)
