"""Presence: who is in which room, counted per user. Pure.

A user may have several sessions in a room; presence changes only when the
first one enters or the last one leaves, so ``presence`` events are never
duplicated and ``joined.members`` lists each user once.
"""

from __future__ import annotations

from collections import Counter


class Roster:
    """Sessions per user per room, in the order users arrived."""

    def __init__(self) -> None:
        self._rooms: dict[str, Counter[str]] = {}

    def add(self, room: str, user: str) -> bool:
        """Count one more session of ``user`` in ``room``; True if it is the user's first."""
        users = self._rooms.get(room)
        if users is None:
            users = self._rooms[room] = Counter()
        users[user] += 1
        return users[user] == 1

    def remove(self, room: str, user: str) -> bool:
        """Count one session less; True if it was the user's last (a room left empty is freed)."""
        users = self._rooms.get(room)
        if users is None or users[user] == 0:
            return False
        users[user] -= 1
        if users[user]:
            return False
        del users[user]
        if not users:
            del self._rooms[room]
        return True

    def users(self, room: str) -> list[str]:
        """The distinct users in ``room``, in the order they arrived."""
        return list(self._rooms.get(room, ()))

    def counts(self, room: str) -> dict[str, int]:
        """Sessions per user in ``room``, for the users with one."""
        return dict(self._rooms.get(room, {}))

    def sessions(self, room: str, user: str) -> int:
        """How many sessions ``user`` has in ``room``."""
        return self._rooms.get(room, Counter())[user]
