"""The client's sans-I/O core: one client across all its connections. Pure: no I/O, no clock.

:class:`ClientCore` takes what happened (a handshake attempted, accepted or
refused, a frame received, the connection ended, time passed, the
application sent, joined, left or closed) with the time ``now`` (monotonic
seconds), and answers with what to do: frames to write on the current
connection (:meth:`ClientCore.data_to_send`), events for the application
(:meth:`ClientCore.events`), sends settled (:meth:`ClientCore.settled`), a
connection to close (:attr:`ClientCore.close_request`), a token to fetch
(:attr:`ClientCore.token_wanted`), and when to call :meth:`ClientCore.tick`
next (:meth:`ClientCore.deadline`). :mod:`chat.client.driver` carries these
out over a real WebSocket; the unit tests drive it with plain values.

The rules it applies are the contract's: the close-code table
(:mod:`chat.client.policy`), recovery with ``since``/``epoch``
(:mod:`chat.client.rooms`), retries with the same ``id``
(:mod:`chat.client.sends`), heartbeats and token refresh
(``docs/protocol.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from chat.client.events import (
    Ack,
    ClientClosed,
    ClientError,
    ConnectionState,
    Event,
    Left,
    SendFailed,
    ServerError,
    StateChanged,
)
from chat.client.policy import Backoff, ByeInfo, Decision, after_close, after_refusal
from chat.client.rooms import Rooms
from chat.client.sends import Bucket, Outbox, retry_delay
from chat.client.tokens import expiry, refresh_delay

#: The subprotocol the client offers: the server may batch frames (split on ``\n``).
SUBPROTOCOL = "chat.v1.batch"
#: Until the server's ``welcome`` says otherwise (its defaults).
DEFAULT_HEARTBEAT = (25.0, 10.0)
DEFAULT_LIMITS = (20.0, 40)
#: ``error`` codes after which a ``join`` is not tried again: the room is dropped.
JOIN_FINAL_CODES = frozenset({"forbidden", "bad_request"})
#: Room ids, as the server checks them (README, Endpoints).
ROOM_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How a client connects and reconnects; durations in seconds.

    ``urls`` are ``ws://`` or ``wss://`` URLs of ``/ws/{room}`` on each
    server, all of the same room (the one every connection starts in); they
    are tried in turn, the next one after each failure.
    """

    urls: tuple[str, ...]
    user: str | None = None
    #: Rooms joined after the URL's one, on every connection.
    rooms: tuple[str, ...] = ()
    #: Full-jitter exponential backoff: attempt n waits up to min(cap, base * 2**n).
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    #: A connection that lasted this long resets the backoff.
    stable_after: float = 10.0
    #: Sends awaiting their ack at most (the server remembers a user's last 1,000 ids).
    outbox_limit: int = 1000
    #: A server silent this much longer than its heartbeat promises is dead.
    silence_grace: float = 5.0
    #: Time for the ``welcome`` after the handshake.
    welcome_timeout: float = 10.0
    #: Refresh the token this long before its ``exp`` (a quarter of its life at most).
    refresh_margin: float = 30.0
    #: The server's ``CHAT_SEND_ID_WINDOW``: how long it remembers a send's id. A send
    #: first written longer ago is not sent again but fails as ``uncertain``.
    send_id_window: float = 300.0

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("give at least one server URL")
        rooms = {url_room(url) for url in self.urls}
        if len(rooms) != 1:
            raise ValueError(f"every URL must name the same room, not {sorted(rooms)}")
        for room in self.rooms:
            check_room(room)


def check_room(room: str) -> str:
    """``room`` if it is a valid room id; ValueError otherwise."""
    if not 1 <= len(room) <= 64 or not set(room) <= ROOM_CHARACTERS:
        raise ValueError(f"{room!r} is not a room id: [A-Za-z0-9_.-]{{1,64}}")
    return room


def url_room(url: str) -> str:
    """The room of a ``ws://host:port/ws/{room}`` URL; ValueError for any other URL."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    if parts.scheme not in ("ws", "wss") or len(segments) < 3 or segments[-2] != "ws":
        raise ValueError(f"{url!r} is not a ws:// or wss:// URL of /ws/{{room}}")
    return check_room(segments[-1])


@dataclass(frozen=True, slots=True)
class Attempt:
    """Connect to ``url`` now (query built: ``user``, and ``since``/``epoch`` to recover)."""

    url: str


class ClientCore:
    """One client's state and decisions across all its connections.

    Call :meth:`start` once, then feed it; after every call, carry out its
    outputs. Raises only for misuse by the application (:meth:`send` on a
    room not joined, a full outbox, a closed client).

    ``authenticated`` says the driver sends a token; without one and without
    ``config.user``, every connection asks to be ``anon-<id_prefix>``: the
    same user across reconnects, so the server recognises a retried send's
    id (it remembers ids per user).
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        random: Callable[[], float],
        id_prefix: str,
        renewable_token: bool = False,
        authenticated: bool = False,
    ) -> None:
        self.config = config
        self.room = url_room(config.urls[0])
        self._renewable = renewable_token
        self._random = random
        #: The ``?user=`` of every connection (None with a token).
        self.query_user: str | None = config.user
        if config.user is None and not (authenticated or renewable_token):
            self.query_user = f"anon-{id_prefix}"
        self._backoff = Backoff(config.backoff_base, config.backoff_cap, random)
        self.rooms = Rooms()
        for room in (self.room, *config.rooms):
            self.rooms.want(room)
        self.outbox = Outbox(config.outbox_limit, random, id_prefix)
        self.state = ConnectionState.CLOSED
        self._started = False
        #: Closed for good: no connection and no attempt will follow.
        self.finished = False
        self._closing = False
        self._url_index = 0
        self._attempt_at: float | None = None
        self._opened_at: float | None = None
        self._welcomed_at: float | None = None
        self._heard_at = 0.0
        self._bye: ByeInfo | None = None
        self._lost_reason: str | None = None
        self._heartbeat = DEFAULT_HEARTBEAT
        self._bucket: Bucket | None = None
        self._refresh_at: float | None = None
        #: The last token's ``exp``, and how many tokens in a row did not extend it.
        self._token_exp: float | None = None
        self._stale_tokens = 0
        self._provider_failures = 0
        #: The driver must fetch a token (:attr:`token_wanted`) and call :meth:`token`.
        self.token_wanted = False
        #: The driver must close the current connection; the text says why.
        self.close_request: str | None = None
        self._frames: list[str] = []
        self._events: list[Event] = []
        self._settled: list[tuple[str, Ack | ClientError]] = []
        #: Server facts of the current connection (``welcome``).
        self.session: str | None = None
        self.user: str | None = config.user
        self.node: str | None = None
        #: Successful connections after the first one.
        self.reconnects = 0
        self._welcomes = 0

    # -- outputs ---------------------------------------------------------------

    def data_to_send(self) -> list[str]:
        """Frames to write on the current connection, in order (taken)."""
        frames, self._frames = self._frames, []
        return frames

    def events(self) -> list[Event]:
        """Events for the application, in order (taken)."""
        events, self._events = self._events, []
        return events

    def settled(self) -> list[tuple[str, Ack | ClientError]]:
        """Sends settled since the last call: ``(id, Ack or the error it fails with)`` (taken)."""
        settled, self._settled = self._settled, []
        return settled

    @property
    def url(self) -> str:
        """The server URL of the current (or next) attempt."""
        return self.config.urls[self._url_index]

    def deadline(self) -> float | None:
        """When :meth:`tick` or :meth:`attempt` has something to do next (None: nothing)."""
        times: list[float] = []
        if self._attempt_at is not None:
            times.append(self._attempt_at)
        if self._opened_at is not None and self.close_request is None:
            if self._welcomed_at is None:
                times.append(self._opened_at + self.config.welcome_timeout)
            else:
                times.append(self._silence_deadline())
                if self._refresh_at is not None and self._renewable and not self.token_wanted:
                    times.append(self._refresh_at)
                ready = [
                    t
                    for t in (
                        self.outbox.next_ready(self.rooms.ready),
                        self.rooms.next_join(),
                        self._opened_at if self.rooms.to_leave() else None,
                    )
                    if t is not None
                ]
                if ready and self._bucket is not None:
                    times.append(max(min(ready), self._bucket.ready_at()))
        return min(times) if times else None

    def _silence_deadline(self) -> float:
        interval, timeout = self._heartbeat
        return self._heard_at + interval + timeout + self.config.silence_grace

    # -- the connection's life -------------------------------------------------

    def start(self, now: float) -> None:
        """Begin: the first attempt is due at once."""
        if self._started:
            return
        self._started = True
        self._attempt_at = now

    def attempt(self, now: float) -> Attempt | None:
        """The handshake to make now, if one is due (the state becomes ``CONNECTING``)."""
        if self._attempt_at is None or now < self._attempt_at:
            return None
        self._attempt_at = None
        self._bye = None
        self._lost_reason = None
        self._set_state(ConnectionState.CONNECTING, "connecting")
        return Attempt(self._attempt_url())

    def _attempt_url(self) -> str:
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("since", "epoch", "user")]
        if self.query_user is not None:
            query.append(("user", self.query_user))
        since, epoch = self.rooms.recovery(self.room)
        if self.room in self.rooms and since is not None and epoch is not None:
            query += [("since", str(since)), ("epoch", epoch)]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def opened(self, now: float) -> None:
        """The handshake was accepted; the ``welcome`` comes next."""
        if self.finished:
            return
        self._opened_at = now
        self._heard_at = now

    def refused(self, now: float, status: int | None, detail: str = "") -> None:
        """The handshake failed: HTTP ``status``, or None when no server answered."""
        self._opened_at = None
        decision = after_refusal(status, can_renew_token=self._renewable)
        self._after(now, decision, code=status, detail=detail or None)

    def ended(self, now: float, code: int | None) -> None:
        """The connection ended with close ``code`` (None or 1006: no close frame)."""
        if self._opened_at is None:
            return
        lasted = now - (self._welcomed_at if self._welcomed_at is not None else now)
        if lasted >= self.config.stable_after:
            self._backoff.reset()
        self._opened_at = None
        self._welcomed_at = None
        self.close_request = None
        self.token_wanted = False
        self._frames.clear()
        # A leave cut off by the loss is done: the client is in no room any more.
        for room in self.rooms.connection_lost():
            self._events.append(Left(room))
        self.outbox.connection_lost()
        decision = after_close(code, self._bye)
        if self._lost_reason is not None and self._bye is None:
            decision = Decision(True, self._lost_reason)
        self._after(now, decision, code=code, detail=self._bye.detail if self._bye else None)

    def _after(
        self, now: float, decision: Decision, *, code: int | None, detail: str | None
    ) -> None:
        if self._closing:
            self._stop("closed by the client")
            return
        if not decision.reconnect:
            self._stop(decision.reason, code=code, detail=detail)
            return
        delay = decision.after if decision.after is not None else self._backoff.next_delay()
        if len(self.config.urls) > 1:
            self._url_index = (self._url_index + 1) % len(self.config.urls)
        self._attempt_at = now + delay
        self._set_state(
            ConnectionState.RECONNECTING, decision.reason, code=code, detail=detail, retry_in=delay
        )

    def _stop(self, reason: str, *, code: int | None = None, detail: str | None = None) -> None:
        self._attempt_at = None
        self.finished = True
        for pending in self.outbox.drain():
            self._settled.append((pending.id, ClientClosed(reason)))
        self._set_state(ConnectionState.CLOSED, reason, code=code, detail=detail)

    def _set_state(
        self,
        state: ConnectionState,
        reason: str,
        *,
        code: int | None = None,
        detail: str | None = None,
        retry_in: float | None = None,
    ) -> None:
        previous, self.state = self.state, state
        self._events.append(StateChanged(state, previous, reason, self.url, code, detail, retry_in))

    # -- frames from the server ------------------------------------------------

    def received(self, raw: str, now: float) -> None:
        """One WebSocket text frame (one JSON object, or several separated by ``\\n``).

        Unknown types and fields are ignored, as the protocol asks; a frame
        that is not JSON at all ends the connection (a server that speaks
        something else) and is retried like a lost connection.
        """
        if self._opened_at is None:
            return
        self._heard_at = now
        for line in raw.split("\n"):
            if not line:
                continue
            try:
                frame = orjson.loads(line)
                if isinstance(frame, dict):
                    self._handle(frame, now)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                self._lose("the server sent an invalid frame")
                return
        self._pump(now)

    def _handle(self, frame: dict[str, Any], now: float) -> None:
        kind = frame.get("type")
        if kind == "message":
            self._own_message(frame)
            message = self.rooms.on_message(frame)
            if message is not None:
                self._events.append(message)
        elif kind == "ack":
            pending = self.outbox.acked(frame.get("id"))
            if pending is not None:
                self._settled.append((pending.id, Ack(pending.id, pending.room, int(frame["seq"]))))
        elif kind == "ping":
            self._frames.append('{"type":"pong"}')
        elif kind == "presence":
            change = self.rooms.on_presence(frame)
            if change is not None:
                self._events.append(change)
        elif kind == "joined":
            self._joined(frame)
        elif kind == "welcome":
            self._welcome(frame, now)
        elif kind == "error":
            self._error(frame, now)
        elif kind == "left":
            if self.rooms.on_left(str(frame["room"])):
                self._events.append(Left(str(frame["room"])))
        elif kind == "bye":
            self._bye = ByeInfo(
                reason=str(frame.get("reason", "")),
                reconnect=bool(frame.get("reconnect", False)),
                retry_after_ms=max(0, int(frame.get("retry_after_ms") or 0)),
                detail=frame.get("detail") if isinstance(frame.get("detail"), str) else None,
            )

    def _welcome(self, frame: dict[str, Any], now: float) -> None:
        heartbeat = frame.get("heartbeat") or {}
        self._heartbeat = (
            float(heartbeat.get("interval", DEFAULT_HEARTBEAT[0])),
            float(heartbeat.get("timeout", DEFAULT_HEARTBEAT[1])),
        )
        limits = frame.get("limits") or {}
        rate = float(limits.get("rate", DEFAULT_LIMITS[0]))
        burst = int(limits.get("burst", DEFAULT_LIMITS[1]))
        # Below the server's limits: joins, pongs and refreshes count against them too.
        bucket = self._bucket = Bucket(max(rate * 0.8, 0.1), max(1, burst // 2), now)
        self.session = str(frame.get("session", ""))
        self.user = str(frame.get("user", self.user or ""))
        self.node = str(frame.get("node", ""))
        if self.state is ConnectionState.CONNECTED:
            return
        self._welcomed_at = now
        self._welcomes += 1
        self.reconnects = self._welcomes - 1
        self._set_state(ConnectionState.CONNECTED, "welcome")
        # The server joins every connection to the URL's room; the rest are asked for,
        # paced by the bucket like sends (the server's rate counts every frame: a
        # client in many rooms must not spend its burst, and more, on its joins).
        url_room = self.rooms.get(self.room)
        if url_room is not None and url_room.wanted:
            url_room.join_sent = True
        else:
            bucket.take(now)
            self._frames.append(_encode({"type": "leave", "room": self.room}))

    def _own_message(self, frame: dict[str, Any]) -> None:
        """A message of this client's user carrying a pending send's id settles that send:
        it was published (its ack was lost with a connection, or is still to come)."""
        if self.user is None or frame.get("user") != self.user:
            return
        room = str(frame["room"])
        pending = self.outbox.delivered(frame.get("id"), room)
        if pending is not None:
            self._settled.append((pending.id, Ack(pending.id, room, int(frame["seq"]))))

    def _joined(self, frame: dict[str, Any]) -> None:
        # A room the application left is held until its leave's ``left`` (the URL's
        # room, which the server joins on every connection, is left at the welcome).
        self._events.extend(self.rooms.on_joined(frame))

    def _error(self, frame: dict[str, Any], now: float) -> None:
        code = str(frame.get("code", ""))
        detail = str(frame.get("detail", ""))
        frame_id = frame.get("id")
        pending, retried = self.outbox.refused(frame_id, code, now)
        if pending is not None:
            if not retried:
                self._settled.append((pending.id, SendFailed(code, detail)))
            return
        if isinstance(frame_id, str) and frame_id.startswith("join:"):
            if not self._join_refused(frame_id[len("join:") :], code, detail, now):
                return
        elif isinstance(frame_id, str) and frame_id.startswith("leave:"):
            self._leave_refused(frame_id[len("leave:") :], code, now)
            return
        elif frame_id == "refresh":
            # Try again soon; the token stays valid until its exp (or the server closes 1008).
            self._refresh_at = now + 5.0
        self._events.append(ServerError(code, detail, frame_id))

    def _join_refused(self, room: str, code: str, detail: str, now: float) -> bool:
        """A ``join`` of ``room`` got ``error`` ``code``; whether to report it.

        Refused for good (``forbidden``: not allowed by the token, or too many
        rooms; ``bad_request``) the room is dropped and its pending sends fail.
        Any other refusal (``rate_limited``, ``unavailable``: Redis is down) is
        tried again after a backoff, with ``since``/``epoch``: the room is kept.
        """
        state = self.rooms.get(room)
        if state is None:
            return False
        if not state.wanted:
            # Left while its join was on the way: not held, the leave is done.
            self.rooms.forget(room)
            self._events.append(Left(room))
            return False
        if code in JOIN_FINAL_CODES:
            self.rooms.forget(room)
            for dropped in self.outbox.drop_room(room):
                self._settled.append((dropped.id, SendFailed(code, detail)))
            return True
        self.rooms.join_refused(room, now, retry_delay(state.refusals + 1, self._random))
        return False

    def _leave_refused(self, room: str, code: str, now: float) -> None:
        """A ``leave`` got ``error`` ``code``: ``rate_limited`` is tried again; any other
        (``not_joined``) means the server does not hold the room: the leave is done."""
        state = self.rooms.get(room)
        if state is None or state.wanted:
            return
        if code == "rate_limited":
            state.leave_sent = False
            return
        self.rooms.forget(room)
        self._events.append(Left(room))

    # -- time ------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Time passed: a silent server, a token to refresh, sends due for a retry."""
        if self._opened_at is None or self.close_request is not None:
            return
        if self._welcomed_at is None:
            if now >= self._opened_at + self.config.welcome_timeout:
                self._lose("no welcome from the server")
            return
        if now >= self._silence_deadline():
            self._lose("server silent")
            return
        if (
            self._renewable
            and self._refresh_at is not None
            and now >= self._refresh_at
            and not self.token_wanted
        ):
            self.token_wanted = True
        self._pump(now)

    def _lose(self, reason: str) -> None:
        """End the connection from this side, then reconnect as after a lost connection."""
        self._lost_reason = reason
        self.close_request = reason

    def alive(self, now: float) -> None:
        """The driver was busy handing events to the application: frames may wait unread,
        so this time does not count as the server's silence."""
        if self._opened_at is not None:
            self._heard_at = max(self._heard_at, now)

    def token(self, token: str, now: float, wall: float) -> None:
        """A token from the provider (at a reconnect, or asked for by :attr:`token_wanted`).

        ``wall`` is the Unix time now: ``exp`` is a Unix time. While
        connected, it goes to the server as ``refresh``.
        """
        self._provider_failures = 0
        exp = expiry(token)
        if exp is None:
            self._refresh_at = None
        else:
            # A provider that hands out the same (cached, or expired) token again must
            # not be asked in a loop: each token that does not extend exp waits longer.
            stale = self._token_exp is not None and exp <= self._token_exp
            self._stale_tokens = self._stale_tokens + 1 if stale else 0
            self._token_exp = exp
            delay = refresh_delay(exp - wall, self.config.refresh_margin, self._stale_tokens)
            self._refresh_at = now + delay
        if self.token_wanted:
            self.token_wanted = False
            if self._welcomed_at is not None and self.close_request is None:
                self._frames.append(_encode({"type": "refresh", "token": token, "id": "refresh"}))

    def token_failed(self, now: float, detail: str) -> None:
        """The token provider raised (``detail`` says what); it is asked again later.

        Before a handshake, this is a failed attempt: backoff, next URL, a
        ``RECONNECTING`` :class:`StateChanged` with the reason. While
        connected (a refresh), the connection goes on with its token until
        ``exp``; a :class:`StateChanged` that keeps the state says so, with
        the delay before the provider is asked again.
        """
        reason = "token provider failed"
        if self._opened_at is None:
            if self.state is ConnectionState.CONNECTING:
                self._after(now, Decision(True, reason), code=None, detail=detail)
            return
        self.token_wanted = False
        self._provider_failures += 1
        delay = retry_delay(self._provider_failures, self._random) * 4
        self._refresh_at = now + delay
        self._set_state(self.state, reason, detail=detail, retry_in=delay)

    # -- the application -------------------------------------------------------

    def send(self, room: str, text: str, now: float, send_id: str | None = None) -> str:
        """Queue a send to ``room``; its id. It goes out as soon as the room is joined.

        Raises :class:`ClientClosed`, ``ValueError`` for a room the client is
        not in, :class:`~chat.client.events.OutboxFull` when the outbox is full.
        """
        self._check_open()
        if room not in self.rooms:
            raise ValueError(f"not in room {room!r}: join it first")
        pending = self.outbox.add(room, text, send_id)
        self._pump(now)
        return pending.id

    def join(self, room: str, now: float) -> None:
        """Be in ``room`` from now on, on every connection (a :class:`Joined` follows)."""
        self._check_open()
        check_room(room)
        if room in self.rooms:
            return
        self.rooms.want(room)
        self._pump(now)

    def leave(self, room: str, now: float) -> None:
        """Leave ``room`` (a :class:`Left` follows); its unacknowledged sends fail."""
        self._check_open()
        if not self.rooms.unwant(room):
            return
        for dropped in self.outbox.drop_room(room):
            self._settled.append((dropped.id, SendFailed("left", f"left {room}")))
        state = self.rooms.get(room)
        if state is not None and state.join_sent and self.close_request is None:
            return  # its leave goes out once the server's answer to the join is in
        if state is not None and state.joined and self.close_request is None:
            self._pump(now)
        else:
            self.rooms.on_left(room)
            self._events.append(Left(room))

    def close(self, now: float) -> None:
        """Close for good: pending sends fail, the connection (if any) is closed."""
        if self._closing or self.finished:
            self._closing = True
            return
        self._closing = True
        if self._opened_at is not None:
            for pending in self.outbox.drain():
                self._settled.append((pending.id, ClientClosed("closed by the client")))
            self.close_request = "closed by the client"
        else:
            self._stop("closed by the client")

    def _check_open(self) -> None:
        if self._closing or self.finished:
            raise ClientClosed("the client is closed")

    def _pump(self, now: float) -> None:
        """Write the leaves, joins and sends that may go out now, within the client's own rate.

        Leaves and joins first: a send waits for its room. A send whose id the
        server may have forgotten fails as ``uncertain`` instead of going out.
        """
        if self._welcomed_at is None or self.close_request is not None or self._bucket is None:
            return
        bucket = self._bucket
        for state in self.rooms.to_leave():
            if not bucket.take(now):
                return
            state.leave_sent = True
            self._frames.append(
                _encode({"type": "leave", "room": state.name, "id": f"leave:{state.name}"})
            )
        for state in self.rooms.to_join(now):
            if not bucket.take(now):
                return
            state.join_sent = True
            self._frames.append(_join_frame(state.name, *self.rooms.recovery(state.name)))
        window = self.config.send_id_window
        for expired in self.outbox.expired(now, window):
            detail = (
                f"no ack, and its id was first sent over {window:.0f} s ago (the server's id"
                " window): it may or may not have been published; not sent again"
            )
            self._settled.append((expired.id, SendFailed("uncertain", detail)))
        for pending in self.outbox.due(now, self.rooms.ready):
            if not bucket.take(now):
                break
            self.outbox.written(pending, now)
            self._frames.append(
                _encode(
                    {"type": "send", "room": pending.room, "text": pending.text, "id": pending.id}
                )
            )


def _join_frame(room: str, since: int | None, epoch: str | None) -> str:
    frame: dict[str, Any] = {"type": "join", "room": room, "id": f"join:{room}"}
    if since is not None and epoch is not None:
        frame["since"] = since
        frame["epoch"] = epoch
    return _encode(frame)


def _encode(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def urls_of(urls: str | Sequence[str]) -> tuple[str, ...]:
    """One URL or several, as a tuple."""
    return (urls,) if isinstance(urls, str) else tuple(urls)
