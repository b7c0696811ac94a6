"""The session core: one session's protocol and lifecycle, with no I/O. Pure and synchronous.

A :class:`SessionCore` takes what happens to a session as plain values (a
client's text, a tick of the clock, a room's publication, the answer to one of
its requests) and decides what follows: frames for the client, queued in
:attr:`SessionCore.outbox`, and requests for its driver, taken with
:meth:`SessionCore.requests`: publish a message, join a room (subscribe,
recover, count presence), leave one, list a room's members, announce a
presence change; :meth:`SessionCore.tick` says when to cut the connection.
The driver (:mod:`chat.connection`) carries them out and reports back; unit
tests drive the core with plain values, no event loop and no sleeps.

Every decision reads the session's state through the lifecycle table
(:data:`chat.session.ALLOWED`): whether client frames are handled, timers
run, frames may be queued.
"""

from __future__ import annotations

from chat.auth import Authenticator, Identity
from chat.dialogue import Dialogue
from chat.envelope import Publication, RunStarted
from chat.errors import (
    BinaryFrame,
    MessageTooBig,
    SessionClosed,
    SlowConsumer,
    retry_after_ms,
)
from chat.membership import Membership, Verdict
from chat.outbox import SendQueue
from chat.protocol import Subprotocol
from chat.replies import MembersOf, Replies
from chat.requests import (
    Publish,
    Request,
)
from chat.session import ALLOWED, Session, SessionEvent, Totals, allowed
from chat.settings import Settings
from chat.transport import CONNECTION_LOST, Disconnect, Handshake

_SEND = Verdict.SEND


class SessionCore:
    """One session from accept to close; see the module docstring."""

    __slots__ = (
        "_closing",
        "_dialogue",
        "_now",
        "_requests",
        "_settings",
        "_totals",
        "members",
        "outbox",
        "plain",
        "replies",
        "session",
    )

    def __init__(
        self,
        session: Session,
        settings: Settings,
        auth: Authenticator,
        totals: Totals,
        members_of: MembersOf,
    ) -> None:
        self.session = session
        self._settings = settings
        self._totals = totals
        #: Frames for the client, in order; the driver writes them.
        self.outbox = SendQueue(settings.send_queue)
        self._closing: Closing | None = None
        #: The session's rooms and where it is in each.
        self.members = Membership(
            session.rooms,
            hold_limit=settings.send_queue,
            left_limit=settings.max_rooms_per_session,
        )
        self._requests: list[Request] = []
        #: The latest time the core was told (for what happens between ticks).
        self._now = session.connected_at
        #: Plain text: no JSON frame (welcome, joined, presence, error, bye) is ever sent.
        self.plain = session.protocol is Subprotocol.TEXT
        self._dialogue = Dialogue(self, settings, auth)
        #: Where the driver reports how its requests went (:class:`~chat.replies.Replies`).
        self.replies = Replies(self, settings.send_queue, members_of)

    @property
    def identity(self) -> Identity | None:
        """Who the session's token speaks for; None in open mode."""
        return self._dialogue.identity

    def authenticate(self, identity: Identity) -> None:
        """The handshake's token speaks for ``identity`` (set before :meth:`accept`)."""
        self._dialogue.identity = identity

    @property
    def has_requests(self) -> bool:
        """True when requests wait for the driver."""
        return bool(self._requests)

    @property
    def waiting_requests(self) -> int:
        """How many requests wait for the driver."""
        return len(self._requests)

    def requests(self) -> list[Request]:
        """The requests made since the last call, in order (the driver carries them out).

        Read it, do not keep it: when there are none, it is the core's own (empty) list.
        """
        taken = self._requests
        if taken:
            self._requests = []
        return taken

    def batches(self, message: str | bytes) -> bool:
        """True when ``message`` may be heard before the requests waiting are carried out,
        so that its publish goes out with theirs in one round trip to the broker.

        That is when every request waiting is a publish and ``message``, heard,
        can only ask to publish too (a ``send``, or any text of a room's
        plain-text session) or be refused with an ``error``: the only reply
        that may then come before the waiting sends' acks is an ``error``
        for a later ``send`` of the same burst, which names its ``id``. Anything
        else (a ``join``, a ``ping``) is heard only after them.
        """
        if (
            isinstance(message, bytes)
            or self._closing is not None
            or not all(type(request) is Publish for request in self._requests)
        ):
            return False
        return self._dialogue.publishes(message)

    def request(self, request: Request) -> None:
        """Ask the driver for ``request``."""
        self._requests.append(request)

    # -- lifecycle ---------------------------------------------------------------

    def accept(
        self,
        handshake: Handshake,
        now: float,
        wall: float,
        closing: SessionClosed | None = None,
    ) -> None:
        """The handshake was accepted: greet the client and join the URL's room.

        With ``closing`` (the server began draining meanwhile) the session is
        closed at once instead, with no greeting and no room joined.
        """
        self._now = now
        self.session.accept(now)
        if closing is not None:
            self.close(closing, now)
        else:
            self._dialogue.start(handshake, now, wall)

    def close(self, error: SessionClosed, now: float | None = None) -> None:
        """Start closing with ``error``'s code; idempotent, and only from a live state.

        A slow consumer's backlog is dropped; otherwise what is queued goes
        first. JSON sessions then get ``bye``; the driver sends the close frame
        once the outbox is empty, and the peer has ``CHAT_DRAIN_TIMEOUT`` from
        ``now`` to answer (without ``now``, from the next :meth:`tick`), or none
        when it is presumed dead (a heartbeat timeout: the first :meth:`tick` at or
        after the deadline says to cut it).
        """
        session = self.session
        if not allowed(session.state, SessionEvent.CLOSE):
            return
        if now is not None:
            self._now = now
        session.begin_close(self._now, error.code, error.reason)
        self._closing = Closing(error, now, self._settings.drain_timeout)
        if isinstance(error, SlowConsumer):
            self.outbox.clear()
        bye = self._dialogue.bye(error)
        if bye is not None:
            self.outbox.put_final(bye)
        self.outbox.close()

    def ended(self, disconnect: Disconnect | None, now: float) -> list[str]:
        """The connection is over: record how it ended; returns the rooms to leave.

        The session's ``rooms`` stay as they were (status shows where it was).
        """
        session = self.session
        if self.closing is not None:
            code, reason, by = int(self.closing.code), self.closing.reason, "server"
        elif disconnect is not None:
            code, reason, by = disconnect.code, disconnect.reason, disconnect.by
        else:
            code, reason, by = 1006, CONNECTION_LOST, "client"
        session.close(now, code, reason, by)
        self.outbox.close()
        self.outbox.clear()
        rooms = list(session.rooms)
        for room in rooms:
            self.members.forget(room)
        return rooms

    @property
    def closing(self) -> SessionClosed | None:
        """The close the server started, if any: its code goes in the close frame."""
        return None if self._closing is None else self._closing.error

    @property
    def close_deadline(self) -> float | None:
        """When a peer that does not answer the close is cut (monotonic), once known."""
        return None if self._closing is None else self._closing.deadline

    @property
    def close_frame(self) -> tuple[int, str] | None:
        """The close frame to send once the outbox is empty: ``(code, reason)`` while one
        is due (the server is closing, and it was not sent yet)."""
        closing = self._closing
        if closing is None or closing.frame_sent or not self.session.closing:
            return None
        return int(closing.error.code), closing.error.description

    @property
    def has_output(self) -> bool:
        """True when the driver has something to write: frames, or the close frame."""
        return bool(self.outbox) or self.close_frame is not None

    def close_frame_sent(self) -> None:
        """The close frame went out: the peer's reply is awaited."""
        if self._closing is not None:
            self._closing.frame_sent = True

    # -- what happens ------------------------------------------------------------

    def receive(self, message: str | bytes, now: float, wall: float) -> None:
        """A client frame: text, or binary (refused: close 1003)."""
        session = self.session
        if not ALLOWED[session.state].frames:
            return  # closing: read only until the peer's close arrives
        self._now = now
        session.messages_in += 1
        self._totals.messages_in += 1
        if isinstance(message, bytes):
            self.close(BinaryFrame(), now)
        elif _too_big(message, self._settings.max_message_bytes):
            self.close(MessageTooBig(), now)
        else:
            self._dialogue.hear(message, now, wall)

    def tick(self, now: float) -> bool:
        """The session's timers at ``now`` (the supervisor calls this every tick).

        True when the connection must be cut now: the peer did not answer the
        close in time.
        """
        self._now = now
        if self._closing is None:
            self._dialogue.tick(now)
            return False
        return self._closing.overdue(now)

    def deliver(self, publication: Publication, frame: str) -> bool:
        """A room's message (``frame`` is its encoded ``message``); True when the outbox
        changed (a frame queued, or a close begun), so that the driver writes.

        Each ``seq`` reaches the client at most once, after its room's replay;
        a message of a new run of the room comes after a fresh ``joined``.
        """
        verdict = self.members.place(publication, frame)
        if verdict is _SEND:
            # queue(), inline: this runs once per delivery.
            if not ALLOWED[self.session.state].sends:
                return False
            if self.outbox.put_nowait(publication.text if self.plain else frame):
                return True
            return self.overflowed()
        if verdict is Verdict.NEW_RUN:
            return self.replies.new_run(publication, frame)
        if verdict is Verdict.OVERFLOW:
            return self.overflowed()
        return False

    def restarted(self, run: RunStarted) -> bool:
        """A room began a new run of its ``seq``: a fresh ``joined``. True when the client
        knows the run's users now (a plain-text client hears no presence: always)."""
        return self.replies.restarted(run)

    def notify(self, frame: str) -> bool:
        """An event frame (``presence``) for JSON sessions; True when the outbox changed."""
        return not self.plain and self.queue(frame)

    def queue(self, frame: str) -> bool:
        """Queue one frame for the client; a full outbox closes the session 1013.

        Nothing is queued once the session is closing (the lifecycle table
        says so). True when the outbox changed: the frame queued, or the close begun.
        """
        if not ALLOWED[self.session.state].sends:
            return False
        if self.outbox.put_nowait(frame):
            return True
        return self.overflowed()

    def overflowed(self) -> bool:
        """More is waiting than ``CHAT_SEND_QUEUE``: the client cannot keep up.

        True when that began a close (false if the session was closing already).
        """
        closing = self.closing
        self.close(SlowConsumer(retry_after_ms=retry_after_ms()))
        return self.closing is not closing

    def count_rate_limited(self) -> None:
        """A client frame was dropped for going over the rate."""
        self._totals.rate_limited += 1

    def sent(self, frames: int) -> None:
        """``frames`` of the outbox reached the socket."""
        self.session.messages_out += frames
        self._totals.messages_out += frames


class Closing:
    """A close the server started: its error (the close frame's code), when the peer's
    time to answer is up, and whether the close frame went out."""

    __slots__ = ("_grace", "deadline", "error", "frame_sent")

    def __init__(self, error: SessionClosed, now: float | None, drain_timeout: float) -> None:
        self.error = error
        #: A peer presumed dead is cut at once; others get ``CHAT_DRAIN_TIMEOUT``.
        self._grace = 0.0 if error.presumed_dead else drain_timeout
        #: Unknown until a time is known (a close begun by a delivery): the next tick.
        self.deadline = None if now is None else now + self._grace
        self.frame_sent = False

    def overdue(self, now: float) -> bool:
        """True once the peer's time is up at ``now`` (its deadline starting now if unknown)."""
        if self.deadline is None:
            self.deadline = now + self._grace
            return False
        return now >= self.deadline


def _too_big(text: str, limit: int) -> bool:
    """True when ``text`` is longer than ``limit`` bytes in UTF-8 (encoding only when it may be)."""
    length = len(text)
    if length > limit:
        return True
    if length * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit
