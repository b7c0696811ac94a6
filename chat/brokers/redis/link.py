"""This node's connections to Redis: bounded commands, their health, and the Lua scripts.

Every command has a short timeout and is never retried where running twice
would matter, so a sender is refused within about a second during an
outage, never blocked, and nothing is published twice; an error
reply from Redis (a bug, not an outage) is logged and fails only that call.
The scripts are the ``.lua`` files beside this module; every key they touch
comes to them in ``KEYS``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from importlib.resources import files
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from chat.brokers.base import BrokerUnavailable

log = logging.getLogger("chat.broker")

T = TypeVar("T")

#: Seconds any one Redis command may take before the broker counts as down.
COMMAND_TIMEOUT = 0.5

#: The scripts, by name: ``scripts/<name>.lua``.
SCRIPT_NAMES = (
    "publish",
    "recover",
    "presence_enter",
    "presence_leave",
    "claim",
    "release",
    "heartbeat",
    "nodes",
    "reap",
    "sync",
)

#: A registered script: ``await script(keys=[...], args=[...])``.
Script = AsyncScript


def mask_url(url: str) -> str:
    """``url`` as ``scheme://host:port/db``: no user, password or query (``?password=``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def script_source(name: str) -> str:
    """The Lua source of script ``name``."""
    return files("chat.brokers.redis").joinpath("scripts", f"{name}.lua").read_text("utf-8")


class Link:
    """This node's clients of Redis. Each command is bounded in time (a frozen Redis
    still fails a call within :data:`COMMAND_TIMEOUT`).

    - :attr:`commands`, for reads and writes that may run twice: one retry on a
      broken pooled socket, never on a timeout;
    - :attr:`once`, for the scripts and publishes that must not run twice (a
      publish, a count): no retry, since a connection lost after the command
      reached Redis, with only the reply lost, looks like one lost before it;
      such a failure is :class:`BrokerUnavailable` (``uncertain`` where the
      caller says so) and the caller decides;
    - :attr:`listener`, the subscription's: no retry, its loss must surface, to
      resubscribe and resync.
    """

    def __init__(self, url: str, node_id: str) -> None:
        self._url = url
        self._node = node_id
        self.commands = self._client(retries=1)
        self.once = self._client(retries=0)
        self.listener = self._client(retries=0)
        self.scripts: dict[str, Script] = {
            name: self.once.register_script(script_source(name)) for name in SCRIPT_NAMES
        }
        #: The last command went through.
        self.ok = False
        self.last_error: str | None = None
        #: Set when a call failed as an outage: the subscription is rebuilt.
        self.trouble = anyio.Event()
        self._logged: str | None = None

    @property
    def url(self) -> str:
        """The URL with any credentials masked."""
        return mask_url(self._url)

    def _client(self, *, retries: int) -> Redis:
        return Redis.from_url(
            self._url,
            socket_timeout=COMMAND_TIMEOUT,
            socket_connect_timeout=COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), retries, supported_errors=(RedisConnectionError,)),
            health_check_interval=0,
            decode_responses=True,
            client_name=f"chat-{self._node}",
        )

    async def call(self, command: Awaitable[T], *, uncertain: bool = False) -> T:
        """Run one command within the timeout; :class:`BrokerUnavailable` otherwise.

        A connection problem or timeout marks the link down (and sets
        :attr:`trouble`); an error reply only fails this call. With
        ``uncertain``, a command that got no answer is reported as one that
        may still take effect (Redis runs what reached it, however late).
        """
        try:
            with anyio.fail_after(COMMAND_TIMEOUT * 2):
                result = await command
        except ResponseError as error:
            self.log_once(f"redis refused a command: {error}")
            raise BrokerUnavailable("redis refused the command") from None
        except (RedisError, OSError, TimeoutError) as error:
            self.ok = False
            self.last_error = type(error).__name__
            self.trouble.set()
            raise BrokerUnavailable(type(error).__name__, uncertain=uncertain) from None
        self.ok = True
        return result

    async def forget_connections(self) -> None:
        """Close the idle connections of :attr:`once` (call on each new subscription).

        After Redis restarted they lead nowhere, and a command that is never
        retried would fail on the first of them, after the outage was over.
        """
        await self.once.connection_pool.disconnect(inuse_connections=False)

    async def run_id(self) -> str:
        """The Redis server's run (its ``run_id``, shortened): part of every epoch."""
        with anyio.fail_after(COMMAND_TIMEOUT * 2):
            info = await self.commands.info("server")
        return str(info.get("run_id", ""))[:8]

    def log_once(self, message: str) -> None:
        """Log a problem once in a row, not on every beat of a loop."""
        if message != self._logged:
            self._logged = message
            log.error(message)

    async def aclose(self) -> None:
        await self.commands.aclose()
        await self.once.aclose()
        await self.listener.aclose()
