"""Every Redis key and channel chat uses, by name. Scripts get them all in ``KEYS``.

Room ids, user names and node ids are checked before they get here, and each
kind of key has its own prefix, so no two can collide:

* ``chat:room:{room}:meta`` hash ``seq``, ``epoch``; ``chat:room:{room}:log``
  stream of the last ``CHAT_HISTORY_SIZE`` publications;
  ``chat:room:{room}:presence`` hash user -> sessions; ``chat:room:{room}`` the
  room's pub/sub channel (publications and presence changes, JSON).
* ``chat:sessions`` hash user -> sessions (the per-user cap).
* ``chat:sent:{user}`` hash ``room SEP id`` -> ``seq epoch digest time`` and
  ``chat:sent-order:{user}`` sorted set of the same fields by time: the user's
  recent sends with an ``id`` (:mod:`chat.idempotency`).
* ``chat:nodes`` sorted set node -> last heartbeat (Redis time);
  ``chat:node-sessions`` hash node -> sessions; each node's own share of
  presence and sessions, ``chat:node:{node}:presence`` (``room SEP user`` ->
  sessions) and ``chat:node:{node}:claims`` (user -> sessions), so that a node
  that dies is reaped by the others; ``chat:canary:{node}`` its canary channel.
* ``chat:control`` the channel of commands to every node (the server API's
  disconnects) and ``chat:control:{node}`` each node's channel for the answers
  to its commands (:mod:`chat.brokers.redis.control`).
"""

from __future__ import annotations

#: Separates room and user (or room and id) in one field; no room or user may contain it.
SEP = "\x1f"

NODES = "chat:nodes"
NODE_SESSIONS = "chat:node-sessions"
SESSIONS = "chat:sessions"
CONTROL = "chat:control"


def channel(room: str) -> str:
    """The room's pub/sub channel (also the prefix of its keys)."""
    return f"chat:room:{room}"


def meta(room: str) -> str:
    return f"chat:room:{room}:meta"


def log(room: str) -> str:
    return f"chat:room:{room}:log"


def presence(room: str) -> str:
    return f"chat:room:{room}:presence"


def sent(user: str) -> str:
    return f"chat:sent:{user}"


def sent_order(user: str) -> str:
    return f"chat:sent-order:{user}"


def node_presence(node: str) -> str:
    return f"chat:node:{node}:presence"


def node_claims(node: str) -> str:
    return f"chat:node:{node}:claims"


def canary(node: str) -> str:
    return f"chat:canary:{node}"


def control_answers(node: str) -> str:
    """The channel where ``node`` hears the answers to its commands."""
    return f"chat:control:{node}"
