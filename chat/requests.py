"""What a session's core asks of its driver: the requests of :mod:`chat.core`. Pure values.

Each is carried out by the driver (:mod:`chat.connection`), which reports
back to the core the way each docstring says.
"""

from __future__ import annotations

from dataclasses import dataclass

from chat.envelope import Draft, PresenceChange
from chat.protocol import FrameId


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``draft``; answer :meth:`SessionCore.published` or :meth:`SessionCore.failed`."""

    draft: Draft


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Join ``room``: deliver it to this session, read its history after ``since`` (in run
    ``epoch``), count the session in its presence. Answer :meth:`SessionCore.entered`,
    :meth:`SessionCore.abandoned` (closing meanwhile) or :meth:`SessionCore.failed`."""

    room: str
    since: int | None
    epoch: str | None
    frame_id: FrameId
    #: The room of the handshake's URL (a failure then ends the session).
    from_url: bool = False


@dataclass(frozen=True, slots=True)
class ListMembers:
    """The session is in ``room`` already: answer :meth:`SessionCore.listed` with its users."""

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


@dataclass(frozen=True, slots=True)
class Abort:
    """Cut the connection now (the peer did not answer the close in time)."""


Request = Publish | Subscribe | ListMembers | Unsubscribe | Announce | Abort
