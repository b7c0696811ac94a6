"""chat.client against the real server: restarts, Redis outages, token refresh, final closes."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import jwt
import pytest

from chat.client import (
    Client,
    ClientClosed,
    ConnectionState,
    Event,
    Joined,
    Message,
    RoomUnrecoverable,
    ServerError,
    StateChanged,
)
from chat.client.tokens import expiry
from tests.e2e.conftest import StartServer, keep_secret
from tests.e2e.harness import Server, start_server
from tests.redis_server import RedisServer
from tests.waiting import eventually

pytestmark = pytest.mark.anyio

SECRET = keep_secret("client-test-secret-0123456789abcdefghijklmnop")


def token(sub: str, ttl: float, **claims: object) -> str:
    return keep_secret(
        jwt.encode({"sub": sub, "exp": int(time.time() + ttl), **claims}, SECRET, "HS256")
    )


class Recorder:
    """Every event of a client, read by a task of the test."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[Event] = []

    async def run(self) -> None:
        async for event in self.client:
            self.events.append(event)

    def messages(self) -> list[Message]:
        return [e for e in self.events if isinstance(e, Message)]

    def texts(self) -> list[str]:
        return [m.text for m in self.messages()]

    def states(self) -> list[StateChanged]:
        return [e for e in self.events if isinstance(e, StateChanged)]


class Sender:
    """Sends ``m0, m1, ...`` one after another, each awaited until acknowledged."""

    def __init__(self, client: Client, room: str) -> None:
        self.client = client
        self.room = room
        self.acked: list[str] = []
        self.stop = anyio.Event()

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            await self.client.send(self.room, f"m{n}")
            self.acked.append(f"m{n}")
            n += 1
            await anyio.sleep(0.02)


def assert_once_in_order(recorder: Recorder, acked: list[str]) -> None:
    texts = recorder.texts()
    assert sorted(set(texts)) == sorted(texts), "a message delivered twice"
    assert set(acked) <= set(texts), f"lost: {sorted(set(acked) - set(texts))[:10]}"
    seqs = [m.seq for m in recorder.messages()]
    assert seqs == sorted(seqs), "out of seq order"


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[list[Server]]:
    """Servers a test starts (and restarts) itself; each stopped by PID, its log checked."""
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()
    for server in servers:
        assert "Traceback" not in server.log()


async def test_a_client_outlives_a_server_restart_and_gets_every_acknowledged_message_once(
    tmp_path: Path, own_redis: RedisServer, restartable: list[Server]
) -> None:
    env = {"CHAT_BROKER_URL": own_redis.url, "CHAT_NODE_ID": "n1", "CHAT_HISTORY_SIZE": "500"}
    server = start_server(tmp_path, env)
    restartable.append(server)
    url = server.ws("/ws/lobby")
    async with (
        Client(url, user="listener") as listener,
        Client(url, user="sender") as sending,
        anyio.create_task_group() as group,
    ):
        recorder, sender = Recorder(listener), Sender(sending, "lobby")
        group.start_soon(recorder.run)
        group.start_soon(sender.run)
        assert await eventually(lambda: len(sender.acked) >= 20, timeout=10)
        server.signal(signal.SIGTERM)
        assert server.wait(10) == 0
        before = len(sender.acked)
        restartable.append(start_server(tmp_path, env, port=server.port))
        assert await eventually(lambda: len(sender.acked) >= before + 20, timeout=20)
        sender.stop.set()
        assert await eventually(lambda: set(sender.acked) <= set(recorder.texts()), timeout=10)
        group.cancel_scope.cancel()
    assert_once_in_order(recorder, sender.acked)
    assert listener.statistics()["reconnects"] == 1
    states = recorder.states()
    bye = next(s for s in states if s.reason == "bye: shutdown")
    assert (bye.state, bye.code) == (ConnectionState.RECONNECTING, 1001)
    assert bye.retry_in is not None
    assert 1.0 <= bye.retry_in <= 5.0
    assert [e for e in recorder.events if isinstance(e, RoomUnrecoverable)] == []
    # The rejoin recovered the room: whatever the listener missed (up to the rejoin's
    # seq) came as a replay, the rest live; assert_once_in_order shows nothing is missing.
    rejoin = next(e for e in recorder.events if isinstance(e, Joined) and e.rejoined)
    assert rejoin.recovered
    after = recorder.events[recorder.events.index(rejoin) :]
    flags = [(m.seq <= rejoin.seq, m.replayed) for m in after if isinstance(m, Message)]
    assert flags, "no message after the rejoin"
    assert all(up_to == replayed for up_to, replayed in flags), flags


async def test_a_memory_server_restart_is_reported_as_an_unrecoverable_room(
    tmp_path: Path, restartable: list[Server]
) -> None:
    server = start_server(tmp_path)
    restartable.append(server)
    async with Client(server.ws("/ws/lobby"), user="ann") as ann:
        recorder = Recorder(ann)
        async with anyio.create_task_group() as group:
            group.start_soon(recorder.run)
            await ann.send("lobby", "before")
            server.signal(signal.SIGTERM)
            assert server.wait(10) == 0
            restartable.append(start_server(tmp_path, port=server.port))
            await eventually(lambda: ann.statistics()["reconnects"] == 1, timeout=15)
            await ann.send("lobby", "after")
            assert await eventually(lambda: "after" in recorder.texts())
            group.cancel_scope.cancel()
    lost = [e for e in recorder.events if isinstance(e, RoomUnrecoverable)]
    assert len(lost) == 1
    assert (lost[0].reason, lost[0].last_seq, lost[0].seq) == ("new_run", 1, 0)
    assert recorder.texts() == ["before", "after"]


async def test_a_send_refused_unavailable_during_a_redis_freeze_is_retried_and_published_once(
    start: StartServer, own_redis: RedisServer
) -> None:
    nodes = [start({"CHAT_BROKER_URL": own_redis.url, "CHAT_NODE_ID": node}) for node in ("a", "b")]
    async with (
        Client(nodes[0].ws("/ws/idem"), user="ann") as ann,
        Client(nodes[1].ws("/ws/idem"), user="bo") as bo,
        anyio.create_task_group() as group,
    ):
        recorder = Recorder(bo)
        group.start_soon(recorder.run)
        await bo.wait_connected()
        await ann.send("idem", "warm-up")
        assert await eventually(lambda: "warm-up" in recorder.texts(), timeout=10)
        acks = []

        async def send_once() -> None:
            acks.append(await ann.send("idem", "exactly once"))

        own_redis.signal(signal.SIGSTOP)
        try:
            group.start_soon(send_once)
            assert await eventually(lambda: ann.statistics()["retries"] >= 2, timeout=10)
        finally:
            own_redis.signal(signal.SIGCONT)
        assert await eventually(lambda: acks, timeout=30)
        await ann.send("idem", "marker")
        assert await eventually(lambda: "marker" in recorder.texts(), timeout=10)
        group.cancel_scope.cancel()
    copies = [m for m in recorder.messages() if m.text == "exactly once"]
    assert [(m.seq, m.id) for m in copies] == [(acks[0].seq, acks[0].id)]
    assert ann.statistics()["reconnects"] == 0


async def test_a_token_provider_keeps_the_session_alive_past_each_tokens_exp(
    start: StartServer,
) -> None:
    server = start({"CHAT_JWT_SECRET": SECRET, "CHAT_JWT_LEEWAY": "0"})
    tokens: list[str] = []

    def provider() -> str:
        tokens.append(token("alice", ttl=2))
        return tokens[-1]

    async with Client(server.ws("/ws/lobby"), token_provider=provider) as client:
        await client.wait_connected()
        session = client.session
        first_exp = expiry(tokens[0])
        assert first_exp is not None
        # Tokens of two seconds (one to two, exp being whole seconds), refreshed
        # at three quarters of their life: the session outlives the first one by
        # a second (the server, without leeway, closes a session whose token lapsed).
        assert await eventually(
            lambda: len(tokens) >= 4 and time.time() > first_exp + 1.0, timeout=15
        )
        ack = await client.send("lobby", "still here")
        assert client.session == session
        assert client.statistics()["reconnects"] == 0
    assert ack.seq == 1


async def test_a_token_expired_close_1008_is_not_reconnected(start: StartServer) -> None:
    server = start({"CHAT_JWT_SECRET": SECRET, "CHAT_JWT_LEEWAY": "0"})
    async with Client(server.ws("/ws/lobby"), token=token("alice", ttl=2)) as client:
        recorder = Recorder(client)
        with anyio.fail_after(15):
            await recorder.run()  # ends only when the client is closed for good
        with pytest.raises(ClientClosed):
            await client.send("lobby", "too late")
    final = recorder.states()[-1]
    assert (final.state, final.code, final.reason) == (
        ConnectionState.CLOSED,
        1008,
        "bye: token_expired",
    )
    admin = {"Authorization": f"Bearer {token('ops', ttl=60, admin=True)}"}
    status = server.get("/status", headers=admin).json()
    assert status["totals"]["accepted"] == 1


# -- the driver: callbacks, a full buffer, a failing provider, many rooms ----------


@pytest.fixture(scope="module")
def plain(start_shared: StartServer) -> Server:
    """One memory-broker server for the module's tests that restart nothing."""
    return start_shared()


async def test_a_callback_may_answer_each_message_with_a_send(plain: Server) -> None:
    url = plain.ws("/ws/bots")
    answered: list[int] = []

    async with Client(url, user="bot", iterate=False) as bot:

        async def answer(message: Message) -> None:
            if message.user != "bot":
                ack = await bot.send(message.room, f"re: {message.text}")
                answered.append(ack.seq)

        bot.on(Message, answer)
        async with Client(url, user="ann") as ann, anyio.create_task_group() as group:
            recorder = Recorder(ann)
            group.start_soon(recorder.run)
            await bot.wait_connected()
            for n in range(5):
                await ann.send("bots", f"q{n}")
            expected = [f"re: q{n}" for n in range(5)]
            assert await eventually(
                lambda: [t for t in recorder.texts() if t.startswith("re:")] == expected
            ), recorder.texts()
            group.cancel_scope.cancel()
    assert len(answered) == 5


async def test_leaving_async_with_is_prompt_when_the_event_buffer_is_full_and_unread(
    plain: Server,
) -> None:
    url = plain.ws("/ws/unread")
    async with Client(url, user="sender") as sender:
        await sender.wait_connected()
        with anyio.fail_after(15):
            async with Client(url, user="idle", buffer=5) as idle:
                await idle.wait_connected()
                for n in range(20):
                    await sender.send("unread", f"m{n}")
                # Five in the stream, five more queued: the reader waits for the application.
                assert await eventually(lambda: idle.statistics()["waiting"] >= 10)
                left_at = anyio.current_time()
            took = anyio.current_time() - left_at
    assert took < 3.0
    assert idle.state is ConnectionState.CLOSED


async def test_a_callbacks_exception_is_raised_as_it_is_by_async_with(plain: Server) -> None:

    def boom(message: Message) -> None:
        raise LookupError(f"cannot handle {message.text}")

    with anyio.fail_after(15), pytest.raises(LookupError, match="cannot handle x"):
        async with Client(plain.ws("/ws/boom"), user="ann") as client:
            client.on(Message, boom)
            await client.send("boom", "x")
            await anyio.sleep_forever()  # cancelled when the callback fails


async def test_a_token_provider_that_fails_once_costs_one_attempt_not_the_client(
    start: StartServer,
) -> None:
    server = start({"CHAT_JWT_SECRET": SECRET})
    calls = 0

    async def provider() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("auth service unreachable")
        return token("alice", ttl=600)

    async with Client(server.ws("/ws/lobby"), token_provider=provider) as client:
        recorder = Recorder(client)
        async with anyio.create_task_group() as group:
            group.start_soon(recorder.run)
            with anyio.fail_after(10):
                await client.wait_connected()
            ack = await client.send("lobby", "made it")
            group.cancel_scope.cancel()
    failed = [s for s in recorder.states() if s.reason == "token provider failed"]
    assert [(s.state, s.detail) for s in failed] == [
        (ConnectionState.RECONNECTING, "ConnectionError: auth service unreachable")
    ]
    assert (calls, ack.seq) == (2, 1)


async def test_a_client_in_sixty_rooms_joins_them_all_within_the_servers_rate(
    plain: Server,
) -> None:
    rooms = [f"r{n}" for n in range(60)]
    async with Client(plain.ws("/ws/lobby"), user="busy", rooms=rooms) as client:
        recorder = Recorder(client)
        async with anyio.create_task_group() as group:
            group.start_soon(recorder.run)

            def joined() -> set[str]:
                return {e.room for e in recorder.events if isinstance(e, Joined)}

            assert await eventually(lambda: joined() >= {"lobby", *rooms}, timeout=20)
            group.cancel_scope.cancel()
        assert client.state is ConnectionState.CONNECTED
    assert [e for e in recorder.events if isinstance(e, ServerError)] == []
    assert client.rooms == ["lobby", *rooms]
