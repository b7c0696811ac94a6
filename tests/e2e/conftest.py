from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.typing import Data

from tests.asyncapi import FrameWatch, server_frames
from tests.e2e.harness import Server, start_server

StartServer = Callable[..., Server]

#: Every token and secret the suite has used so far: no server may ever print one.
SECRETS: set[str] = set()


def keep_secret(value: str) -> str:
    """Remember ``value`` as a secret that must never appear in server output."""
    SECRETS.add(value)
    return value


@contextmanager
def server_pool(log_dir: Path) -> Iterator[StartServer]:
    """Start servers on demand; on exit stop each (by PID) and check its log."""
    servers: list[Server] = []

    def _start(
        env: Mapping[str, str] | None = None, args: Sequence[str] = (), port: int | None = None
    ) -> Server:
        for name, value in (env or {}).items():
            if name in {"CHAT_JWT_SECRET", "CHAT_STATUS_TOKEN"}:
                keep_secret(value)
        server = start_server(log_dir, env, args, port=port)
        servers.append(server)
        return server

    try:
        yield _start
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        log = server.log()
        # A normal disconnect is not an error: no test may leave a traceback behind.
        assert "Traceback" not in log, log
        # No token or secret used anywhere in the suite may reach any output.
        leaked = [secret[:12] + "..." for secret in SECRETS if secret in log]
        assert not leaked, f"secrets in the server output: {leaked}"


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartServer]:
    """Start servers for one test."""
    with server_pool(tmp_path) as pool:
        yield pool


@pytest.fixture(scope="module")
def start_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartServer]:
    """Start servers shared by the tests of one module."""
    with server_pool(tmp_path_factory.mktemp("servers")) as pool:
        yield pool


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


#: The run's frame watch, for the terminal summary.
WATCHES: list[FrameWatch] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many server frames were checked against chat/asyncapi.json: none
    in a run with JSON sessions would mean the check is off."""
    for watch in WATCHES:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(watch.kinds.items()))
        terminalreporter.write_line(
            f"chat/asyncapi.json: {watch.seen} chat.v1 server objects checked ({kinds})"
        )


@pytest.fixture(scope="session", autouse=True)
def _frame_watch_of_session() -> Iterator[FrameWatch]:
    """Wrap ``ClientConnection.recv`` (which ``async for`` uses too) for the whole run:
    every frame a ``chat.v1`` / ``chat.v1.batch`` test client receives is checked
    against chat/asyncapi.json, in every test, module fixtures included."""
    watch = FrameWatch(server_frames())
    WATCHES.append(watch)
    original = ClientConnection.recv

    async def recv(self: ClientConnection, decode: bool | None = None) -> Data:
        data = await original(self, decode)
        watch.received(self.subprotocol, data)
        return data

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ClientConnection, "recv", recv)
        yield watch


@pytest.fixture(autouse=True)
def frame_watch(_frame_watch_of_session: FrameWatch) -> Iterator[FrameWatch]:
    """The run's :class:`~tests.asyncapi.FrameWatch`; fails the test that received a
    frame the document does not allow, even one whose error a test or a client
    task swallowed."""
    watch = _frame_watch_of_session
    yield watch
    failures = list(watch.failures)
    watch.failures.clear()
    assert not failures, "server frames that do not match chat/asyncapi.json:\n" + "\n".join(
        failures
    )
