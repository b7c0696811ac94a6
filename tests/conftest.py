from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisServer, need_redis


@pytest.fixture
def anyio_backend() -> str:
    """Every async test runs once, on asyncio (the backend Hypercorn's hooks serve)."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the whole test session (tests flush what they use)."""
    need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_redis(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, emptied."""
    redis_server.command("FLUSHALL")
    return redis_server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it may kill, freeze or restart it)."""
    need_redis()
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
