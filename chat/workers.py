"""Hypercorn's worker processes: the directory where their metrics meet.

``hypercorn -w N`` spawns N workers of one parent process; each imports
``main.py``, and any of them may answer ``/metrics``. prometheus-client's
multiprocess mode makes every worker write its values to files in one
directory, which a scrape on any worker sums. It is chosen when
``prometheus_client`` is first imported, from ``PROMETHEUS_MULTIPROC_DIR``, so
:func:`prepare_metrics_dir` must run before that (``main.py`` calls it first).

This module imports nothing of prometheus-client, FastAPI or the rest of chat.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import stat
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path

#: prometheus-client's variable: the multiprocess directory; set, it turns multiprocess mode on.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The directories chat creates are named ``chat-metrics-<identity of Hypercorn's parent>``.
DIR_PREFIX = "chat-metrics-"
_PROC = Path("/proc")

#: Tells whether a process runs: see :func:`process_identity`.
Identify = Callable[[int], str | None]


def process_identity(pid: int, proc: Path = _PROC) -> str | None:
    """Who process ``pid`` is, or None when no such process runs.

    ``"<pid>-<start time>"`` where ``/proc`` exists (Linux), so that another
    process that reuses the pid later is not taken for it; ``"<pid>"``
    elsewhere.
    """
    if pid <= 0:
        return None
    if proc.is_dir():
        try:
            text = (proc / str(pid) / "stat").read_text()
        except OSError:
            return None
        # Field 22 (start time, in clock ticks since boot); the command name in
        # field 2 may hold spaces and parentheses, so count from the last ")".
        return f"{pid}-{text.rpartition(')')[2].split()[19]}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it runs, as another user
    return str(pid)


def metrics_dir(environ: Mapping[str, str], parent: str | None, tmp: Path) -> Path | None:
    """The directory multiprocess metrics should use, or None for one process.

    The user's ``PROMETHEUS_MULTIPROC_DIR`` when set (they keep it empty
    between runs); else, in a worker of a parent process of identity
    ``parent``, ``tmp/chat-metrics-<parent>``: one per process group, never
    one of an earlier run. Else None: a process serving alone (``-w 0``, an
    embedded app) keeps its metrics to itself.
    """
    if MULTIPROC_ENV in environ:
        return Path(environ[MULTIPROC_ENV])
    if parent is None:
        return None
    return tmp / f"{DIR_PREFIX}{parent}"


def stale_dirs(tmp: Path, identify: Identify = process_identity) -> list[Path]:
    """chat's metrics directories in ``tmp`` whose parent process no longer runs."""
    stale = []
    for path in sorted(tmp.glob(f"{DIR_PREFIX}*")):
        identity = path.name.removeprefix(DIR_PREFIX)
        pid, _, _ = identity.partition("-")
        if not pid.isdigit() or not _owned_dir(path):
            continue
        if identify(int(pid)) != identity:
            stale.append(path)
    return stale


def parent_pid() -> int | None:
    """The pid of the process that started this one through :mod:`multiprocessing`
    (in a Hypercorn worker, Hypercorn's parent), or None."""
    parent = multiprocessing.parent_process()
    return None if parent is None else parent.pid


def prepare_metrics_dir(
    environ: MutableMapping[str, str], *, parent: int | None, tmp: Path
) -> Path | None:
    """Turn on multiprocess metrics in a worker process; the directory, or None.

    Call before anything imports ``prometheus_client``, with the pid of the
    worker's ``parent`` (:func:`parent_pid`) and the system's temporary
    directory ``tmp``. Without a user's ``PROMETHEUS_MULTIPROC_DIR`` (then
    returned as it is), and in a worker (``parent`` runs), creates the
    process group's directory (see :func:`metrics_dir`, mode 0700), sets
    ``PROMETHEUS_MULTIPROC_DIR`` to it in ``environ`` and removes the
    directories of parents that have exited. Raises :class:`OSError` when the
    directory cannot be made, or exists and is not a directory of this user.
    """
    identity = None if parent is None else process_identity(parent)
    path = metrics_dir(environ, identity, tmp)
    if path is None or MULTIPROC_ENV in environ:
        return path
    path.mkdir(mode=0o700, exist_ok=True)
    if not _owned_dir(path):
        raise OSError(f"{path} is not a directory of this user; set {MULTIPROC_ENV}")
    for old in stale_dirs(tmp):
        shutil.rmtree(old, ignore_errors=True)
    environ[MULTIPROC_ENV] = str(path)
    return path


def _owned_dir(path: Path) -> bool:
    """A real directory (not a link) of this user."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
