"""CPU time of chat.client itself: many clients in one process, a join storm and a message flood.

    .venv/bin/python -m bench.client_cpu --clients 500

Starts one node (memory broker) on a free loopback port, connects
``--clients`` clients of :mod:`chat.client` in this process, 50 to a room
(joined 50 at a time: every join is a presence line to the room's members),
then one sender sends ``--messages`` messages over the rooms (up to 200 in
flight) until every member has received every one. Prints this process's CPU
seconds for each phase: what the client costs its application, apart from
the server (CPU time, not wall time: other processes on the machine change
it little). ``docs/performance.md`` "Rolling restart with chat.client" has
the figures.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

import anyio

from chat.client import Client, Joined, Message

ROOM_SIZE = 50
IN_FLIGHT = 200
WAIT = 120.0


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(port: int, clients: int, messages: int) -> tuple[float, float]:
    """CPU seconds of the joins (with their presence) and of the messages."""
    rooms = [f"r{n}" for n in range(max(1, clients // ROOM_SIZE))]
    seen = {"joined": 0, "messages": 0}

    async def listen(client: Client) -> None:
        async with client:
            async for event in client:
                if isinstance(event, Message):
                    seen["messages"] += 1
                elif isinstance(event, Joined):
                    seen["joined"] += 1

    async def reach(key: str, count: int) -> None:
        with anyio.fail_after(WAIT):
            while seen[key] < count:  # noqa: ASYNC110 - counters of many clients
                await anyio.sleep(0.02)

    began = cpu_s()
    async with anyio.create_task_group() as group:
        for n in range(clients):
            url = f"ws://127.0.0.1:{port}/ws/{rooms[n % len(rooms)]}"
            group.start_soon(listen, Client(url, user=f"u{n}"))
            if n % ROOM_SIZE == ROOM_SIZE - 1 or n == clients - 1:
                await reach("joined", n + 1)
        await anyio.sleep(1.0)  # the last presence lines arrive
        joined = cpu_s()
        url = f"ws://127.0.0.1:{port}/ws/{rooms[0]}"
        async with Client(url, user="sender", rooms=rooms[1:]) as sender:
            window = anyio.Semaphore(IN_FLIGHT)

            async def send(n: int) -> None:
                async with window:
                    await sender.send(rooms[n % len(rooms)], f"m{n}")

            async with anyio.create_task_group() as sending:
                for n in range(messages):
                    sending.start_soon(send, n)
            per_room = clients // len(rooms)
            await reach("messages", messages * per_room)
        flooded = cpu_s()
        group.cancel_scope.cancel()
    return joined - began, flooded - joined


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.client_cpu")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    from tests.e2e.harness import start_server

    env = {"CHAT_RATE": "10000", "CHAT_BURST": "10000", "CHAT_MAX_SESSIONS_PER_USER": "0"}
    with tempfile.TemporaryDirectory() as directory:
        server = start_server(Path(directory), env)
        try:
            joins, flood = anyio.run(measure, server.port, args.clients, args.messages)
        finally:
            server.stop()
    deliveries = args.messages * (args.clients // max(1, args.clients // ROOM_SIZE))
    print(
        f"{args.clients} clients: joins and presence {joins:.2f} s CPU; "
        f"{deliveries} message deliveries {flood:.2f} s CPU "
        f"({1e6 * flood / deliveries:.0f} us each)"
    )


if __name__ == "__main__":
    main()
