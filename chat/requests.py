"""What a session's core asks of its driver: the requests of :mod:`chat.core`. Pure values.

Each is carried out by the driver (:mod:`chat.connection`), which reports
back to the core's :class:`~chat.replies.Replies` the way each docstring says.
(A peer that must be cut is not a request: :meth:`chat.core.SessionCore.tick`
returns it.)
"""

from __future__ import annotations

from dataclasses import dataclass

from chat.envelope import Draft, PresenceChange
from chat.protocol import FrameId


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``draft``; answer :meth:`~chat.replies.Replies.published` or
    :meth:`~chat.replies.Replies.failed`."""

    draft: Draft


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Join ``room``: deliver it to this session, read its history after ``since`` (in run
    ``epoch``), count the session in its presence. Answer :meth:`~chat.replies.Replies.entered`,
    :meth:`~chat.replies.Replies.abandoned` (closing meanwhile) or
    :meth:`~chat.replies.Replies.failed`."""

    room: str
    since: int | None
    epoch: str | None
    frame_id: FrameId
    #: The room of the handshake's URL (a failure then ends the session).
    from_url: bool = False


@dataclass(frozen=True, slots=True)
class ListMembers:
    """The session is in ``room`` already: answer :meth:`~chat.replies.Replies.listed`
    with its users."""

    room: str
    since: int | None
    epoch: str | None
    frame_id: FrameId


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Stop delivering ``room`` to this session and release its presence there."""

    room: str


@dataclass(frozen=True, slots=True)
class Announce:
    """Tell the room's members everywhere of ``change``."""

    change: PresenceChange


Request = Publish | Subscribe | ListMembers | Unsubscribe | Announce
