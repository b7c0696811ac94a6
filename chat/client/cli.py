"""``python -m chat client``: a line chat in a terminal, or a scriptable sender and listener.

Interactive (the default): every line typed is sent to the current room;
``/join ROOM`` (which becomes current), ``/leave ROOM``, ``/who`` and
``/quit``. Messages show with their time and user; reconnects show as they
happen. Script mode: ``--send TEXT`` (repeatable) sends, waits for each
``ack`` and exits; ``--listen`` prints what arrives (``--json``: one object
per line) until ``--count`` messages or Ctrl+C. Exit status 0, or 1 when the
client closed for good (the reason on stderr), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any, TextIO

import anyio
import orjson

from chat.client.driver import Client
from chat.client.events import (
    ClientClosed,
    ClientError,
    ConnectionState,
    Event,
    Joined,
    Left,
    Message,
    PresenceEvent,
    RoomUnrecoverable,
    ServerError,
    StateChanged,
)

EXIT_CLOSED = 1
#: Seconds the line chat waits for a room it joins before reading on.
JOIN_WAIT = 10.0
#: Seconds ``--send`` waits for its acks.
SEND_TIMEOUT = 30.0


def event_json(event: Event) -> str:
    """One event as a JSON line: ``"type"``, its type's name in snake case, and its fields."""
    name = "".join(f"_{c.lower()}" if c.isupper() else c for c in type(event).__name__)[1:]
    return orjson.dumps({"type": name, **dataclasses.asdict(event)}).decode()


def describe(event: Event) -> str | None:
    """One event as a line for people, or None for those not shown."""
    if isinstance(event, Message):
        clock = time.strftime("%H:%M:%S", time.localtime(event.ts))
        return f"[{clock}] #{event.room} <{event.user}> {event.text}"
    if isinstance(event, PresenceEvent):
        verb = "joined" if event.event == "join" else "left"
        return f"* {event.user} {verb} #{event.room}"
    if isinstance(event, Joined):
        who = ", ".join(event.members)
        if event.rejoined:
            how = "recovered" if event.recovered else "rejoined"
            return f"* {how} #{event.room} at seq {event.seq}"
        return f"* joined #{event.room}: {who}"
    if isinstance(event, Left):
        return f"* left #{event.room}"
    if isinstance(event, RoomUnrecoverable):
        return (
            f"* messages of #{event.room} after seq {event.last_seq} may be missing"
            f" ({event.reason}); carrying on from seq {event.seq}"
        )
    if isinstance(event, ServerError):
        return f"* error {event.code}: {event.detail}"
    return _state_line(event)


def _state_line(event: StateChanged) -> str | None:
    if event.state is ConnectionState.CONNECTED:
        return f"* connected to {event.url}"
    if event.state is ConnectionState.RECONNECTING:
        detail = f": {event.detail}" if event.detail else ""
        what = "disconnected" if event.previous is ConnectionState.CONNECTED else "not connected"
        return f"* {what} ({event.reason}{detail}); reconnecting in {event.retry_in or 0:.1f} s"
    if event.state is ConnectionState.CLOSED:
        return f"* closed ({event.reason})"
    return None


def _client(args: argparse.Namespace) -> Client:
    return Client(args.urls, user=args.user, token=args.token, rooms=args.room or ())


async def _listen(args: argparse.Namespace, out: TextIO) -> int:
    async with _client(args) as client:
        count = 0
        async for event in client:
            line = event_json(event) if args.json else describe(event)
            if line is not None:
                print(line, file=out, flush=True)
            if isinstance(event, Message):
                count += 1
                if args.count and count >= args.count:
                    return 0
            if isinstance(event, StateChanged) and event.state is ConnectionState.CLOSED:
                print(f"chat client: {event.reason}", file=sys.stderr)
                return EXIT_CLOSED
    return 0


async def _send(args: argparse.Namespace, out: TextIO) -> int:
    async with _client(args) as client:
        room = client.rooms[0]
        with anyio.fail_after(SEND_TIMEOUT):
            for text in args.send:
                ack = await client.send(room, text)
                if args.json:
                    print(orjson.dumps(dataclasses.asdict(ack)).decode(), file=out, flush=True)
                else:
                    print(f"sent to #{ack.room} as seq {ack.seq}", file=out, flush=True)
    return 0


async def _interactive(args: argparse.Namespace, out: TextIO) -> int:
    async with _client(args) as client, anyio.create_task_group() as group:
        current = client.rooms[0]
        status = 0
        # Each room's first Joined (and Left): a command typed after /join sees the
        # room's members, and one typed after /leave (/quit) comes after the Left.
        joined: dict[str, anyio.Event] = {}
        left: dict[str, anyio.Event] = {}

        def arrival(room: str) -> anyio.Event:
            return joined.setdefault(room, anyio.Event())

        def departure(room: str) -> anyio.Event:
            return left.setdefault(room, anyio.Event())

        async def show() -> None:
            nonlocal status
            async for event in client:
                line = describe(event)
                if line is not None:
                    print(line, file=out, flush=True)
                if isinstance(event, Joined):
                    arrival(event.room).set()
                elif isinstance(event, Left):
                    departure(event.room).set()
                if isinstance(event, StateChanged) and event.state is ConnectionState.CLOSED:
                    status = 0 if event.reason == "closed by the client" else EXIT_CLOSED
                    group.cancel_scope.cancel()

        group.start_soon(show)
        await arrival(current).wait()
        print(f"* #{current}: type to send; /join ROOM, /leave ROOM, /who, /quit", file=out)
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line or line.strip() == "/quit":
                break
            line = line.rstrip("\n")
            command, _, rest = line.partition(" ")
            try:
                if command == "/join" and rest:
                    current = rest.strip()
                    joined.pop(current, None)
                    await client.join(current)
                    with anyio.move_on_after(JOIN_WAIT):
                        await arrival(current).wait()
                elif command == "/leave" and rest:
                    room = rest.strip()
                    left.pop(room, None)
                    await client.leave(room)
                    with anyio.move_on_after(JOIN_WAIT):
                        await departure(room).wait()
                elif command == "/who":
                    room = rest.strip() or current
                    print(f"* #{room}: {', '.join(client.members(room))}", file=out, flush=True)
                elif line.startswith("/"):
                    print("* commands: /join ROOM, /leave ROOM, /who [ROOM], /quit", file=out)
                elif line:
                    group.start_soon(_send_line, client, current, line, out)
            except (ClientError, ValueError) as error:
                print(f"* {error}", file=out, flush=True)
        group.cancel_scope.cancel()
    return status


async def _send_line(client: Client, room: str, text: str, out: TextIO) -> None:
    try:
        await client.send(room, text)
    except (ClientError, ValueError) as error:
        print(f"* not sent: {error}", file=out, flush=True)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``python -m chat client`` with parsed ``args``; its exit status."""
    stream = out or sys.stdout
    mode: Any = _send if args.send else _listen if args.listen else _interactive
    try:
        status: int = anyio.run(mode, args, stream)
    except ClientClosed as closed:
        print(f"chat client: {closed.reason}", file=sys.stderr)
        return EXIT_CLOSED
    except TimeoutError:
        print(f"chat client: no ack within {SEND_TIMEOUT:.0f} s", file=sys.stderr)
        return EXIT_CLOSED
    except KeyboardInterrupt:
        return 0
    return status
