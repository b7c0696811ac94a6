"""A private redis-server for tests: a free loopback port, no persistence, stopped by PID.

Tests that need Redis use the ``redis_server`` fixture. Without a
``redis-server`` on the PATH they skip, saying why, unless ``REQUIRE_REDIS=1``
is set (CI sets it), in which case they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RedisServer:
    """One redis-server process; restartable on the same port."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, keep_data: bool = False) -> None:
        """Start (again); from the last ``SAVE`` only with ``keep_data``, else empty."""
        binary = shutil.which("redis-server")
        assert binary is not None
        if not keep_data:
            (self.directory / "dump.rdb").unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def command(self, *args: Any) -> Any:
        with self.client() as client:
            return client.execute_command(*args)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: Redis vanishes with everything it held."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


def need_redis() -> None:
    """Skip (or fail, in CI) when no redis-server is installed."""
    if redis_available():
        return
    if os.environ.get("REQUIRE_REDIS") == "1":
        pytest.fail("REQUIRE_REDIS=1 but no redis-server on the PATH")
    pytest.skip("redis-server is not installed (apt-get install redis-server)")
