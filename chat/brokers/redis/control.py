"""Commands between the nodes on one Redis: the server API's disconnects, cluster-wide.

A session lives on one node, and its id says nothing of which: a disconnect
goes to every node. Each node listens, on a pub/sub connection of its own (a
command never waits behind a room's traffic on the feed's), to
``chat:control`` (commands) and ``chat:control:{node}`` (the answers to its own
commands). The sender publishes the command, which ``PUBLISH`` says how many
nodes heard, applies it to its own sessions, and waits up to
:data:`ANSWER_TIMEOUT` for every other node that heard it to answer with how
many sessions it closed. The live nodes (from the node list) that did not
answer are named, so the caller knows what is certain.

Like publications, a command reaches a node at most once: a node whose
control connection is down at that moment misses it (and is named as not
having answered). Applying a command twice closes nothing more, so the
caller may send it again.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import anyio
import orjson

from chat.brokers.base import Apply, BrokerUnavailable
from chat.brokers.redis import keys
from chat.brokers.redis.link import COMMAND_TIMEOUT, Link
from chat.clock import Clock, wait_within
from chat.envelope import DisconnectCommand, NodeInfo, Tally

log = logging.getLogger("chat.broker")

#: Seconds the sender of a command waits for the other nodes' answers, at most.
ANSWER_TIMEOUT = 1.0
#: Reconnect backoff: doubled from the first to the cap, jittered, reset once ready.
BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0
#: Seconds of silence before the connection is pinged, and after the ping before it
#: counts as deaf (and is rebuilt).
PING_AFTER = 2.0
DEAF_AFTER = 3.0


class _Asked:
    """The answers to one command, and how many are expected (once known)."""

    __slots__ = ("answers", "done", "expected")

    def __init__(self) -> None:
        self.answers: dict[str, int] = {}
        self.expected: int | None = None
        self.done = anyio.Event()

    def answer(self, node: str, closed: int) -> None:
        self.answers[node] = closed
        self._check()

    def expect(self, count: int) -> None:
        self.expected = count
        self._check()

    def _check(self) -> None:
        if self.expected is not None and len(self.answers) >= self.expected:
            self.done.set()


class Control:
    """This node's end of the control channel; :meth:`run` it in the broker's task group.

    ``live_nodes`` lists the live nodes (the broker's node list). Commands from
    other nodes go to :attr:`apply` (the node's), set while the broker runs.
    """

    def __init__(
        self,
        link: Link,
        clock: Clock,
        node_id: str,
        *,
        live_nodes: Callable[[], Awaitable[list[NodeInfo]]],
    ) -> None:
        self._link = link
        self._clock = clock
        self._node = node_id
        self._live_nodes = live_nodes
        self.apply: Apply | None = None
        #: Subscribed to both channels (and heard from them recently).
        self.ready = False
        self._asked: dict[str, _Asked] = {}

    # -- sending -------------------------------------------------------------------

    async def disconnect(self, command: DisconnectCommand) -> Tally:
        """See :meth:`chat.brokers.Control.disconnect`."""
        if not self.ready:
            raise BrokerUnavailable("the control channel is not ready: nothing was done")
        ask = secrets.token_hex(8)
        asked = self._asked[ask] = _Asked()
        body = orjson.dumps(
            {
                "k": "d",
                "ask": ask,
                "from": self._node,
                "session": command.session,
                "user": command.user,
                "detail": command.detail,
                "reconnect": command.reconnect,
            }
        )
        try:
            heard = await self._link.call(
                self._link.once.publish(keys.CONTROL, body), uncertain=True
            )
            here = self.apply(command) if self.apply is not None else 0
            asked.expect(int(heard) - 1)  # every node that heard it but this one
            await wait_within(self._clock, ANSWER_TIMEOUT, asked.done.wait)
            try:
                live = await self._live_nodes()
            except BrokerUnavailable:
                live = []  # who else is alive is unknown: only the answers are certain
            unanswered = sorted(
                n.node for n in live if n.node != self._node and n.node not in asked.answers
            )
            return Tally(here, dict(asked.answers), tuple(unanswered))
        finally:
            del self._asked[ask]

    # -- listening -------------------------------------------------------------------

    async def run(self) -> None:
        """Listen to the control channels, whatever happens (reconnecting with backoff)."""
        backoff = BACKOFF_FIRST
        while True:
            try:
                await self._serve()
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as error:
                if self.ready:
                    log.warning(
                        "redis control channel lost (%s); reconnecting", type(error).__name__
                    )
                    backoff = BACKOFF_FIRST
            finally:
                self.ready = False
            await self._clock.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_CAP)

    async def _serve(self) -> None:
        pubsub = self._link.listener.pubsub()
        channels = {keys.CONTROL, keys.control_answers(self._node)}
        try:
            with anyio.fail_after(COMMAND_TIMEOUT * 4):
                await pubsub.subscribe(*channels)
                pending = set(channels)
                while pending:
                    message = await pubsub.get_message(timeout=COMMAND_TIMEOUT)
                    if message is not None and message["type"] == "subscribe":
                        pending.discard(message["channel"])
            self.ready = True
            heard, pinged = self._clock.now(), False
            while True:
                message = await pubsub.get_message(timeout=COMMAND_TIMEOUT)
                now = self._clock.now()
                if message is not None:
                    heard, pinged = now, False
                    if message["type"] == "message":
                        await self._on_message(message["data"])
                elif now - heard > PING_AFTER + DEAF_AFTER:
                    raise ConnectionError("the control channel went deaf")
                elif now - heard > PING_AFTER and not pinged:
                    # A quiet channel and a dead one look alike: ask for a pong.
                    await pubsub.ping()
                    pinged = True
        finally:
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(COMMAND_TIMEOUT),
                suppress(Exception),
            ):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _on_message(self, raw: str | bytes) -> None:
        data = _parse(raw)
        if data is None:
            log.warning("ignoring a malformed message on the control channel")
            return
        if data["k"] == "a":
            asked = self._asked.get(data["ask"])
            if asked is not None:
                asked.answer(data["node"], data["closed"])
            return
        if data["from"] == self._node:
            return  # applied when it was sent
        command = DisconnectCommand(
            session=data["session"],
            user=data["user"],
            detail=data["detail"],
            reconnect=data["reconnect"],
        )
        try:
            closed = self.apply(command) if self.apply is not None else 0
        except Exception:
            log.exception("applying a disconnect command from node %s failed", data["from"])
            closed = 0
        answer = orjson.dumps({"k": "a", "ask": data["ask"], "node": self._node, "closed": closed})
        with suppress(BrokerUnavailable):  # the sender then names this node as unanswered
            await self._link.call(
                self._link.once.publish(keys.control_answers(data["from"]), answer)
            )


def _optional_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _parse(raw: str | bytes) -> dict[str, Any] | None:
    """A command (``"k": "d"``) or an answer (``"k": "a"``) with fields of the right
    types; None otherwise."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("ask"), str):
        return None
    if data.get("k") == "a":
        closed = data.get("closed")
        valid = isinstance(data.get("node"), str) and isinstance(closed, int)
    elif data.get("k") == "d":
        valid = (
            isinstance(data.get("from"), str)
            and _optional_str(data.get("session"))
            and _optional_str(data.get("user"))
            # Exactly one target: a command naming neither would close every session.
            and (data.get("session") is None) != (data.get("user") is None)
            and isinstance(data.get("detail"), str)
            and isinstance(data.get("reconnect"), bool)
        )
    else:
        valid = False
    return data if valid else None
