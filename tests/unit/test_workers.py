"""The metrics directory of a process group: which one, who made it, which are stale."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chat.workers import (
    MULTIPROC_ENV,
    metrics_dir,
    parent_pid,
    prepare_metrics_dir,
    process_identity,
    stale_dirs,
)

TMP = Path("/tmp-of-the-test")
#: A pid above any kernel's limit: no such process ever runs.
NO_SUCH_PID = 2**22 + 12345


def exited_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize(
    ("environ", "parent", "expected"),
    [
        ({}, None, None),
        ({}, "42-1234", TMP / "chat-metrics-42-1234"),
        ({}, "42", TMP / "chat-metrics-42"),
        ({MULTIPROC_ENV: "/srv/metrics"}, "42-1234", Path("/srv/metrics")),
        ({MULTIPROC_ENV: "/srv/metrics"}, None, Path("/srv/metrics")),
    ],
)
def test_the_metrics_directory_is_the_users_else_one_per_parent_else_none(
    environ: dict[str, str], parent: str | None, expected: Path | None
) -> None:
    assert metrics_dir(environ, parent, TMP) == expected


def test_a_running_process_is_identified_by_its_pid_and_start_time() -> None:
    identity = process_identity(os.getpid())
    assert identity is not None
    pid, _, started = identity.partition("-")
    assert pid == str(os.getpid())
    assert started.isdigit()
    assert process_identity(os.getpid()) == identity


def test_no_process_has_no_identity() -> None:
    assert process_identity(NO_SUCH_PID) is None
    assert process_identity(exited_pid()) is None
    assert process_identity(0) is None


def test_the_start_time_is_read_after_a_command_name_with_spaces_and_parentheses(
    tmp_path: Path,
) -> None:
    (tmp_path / "77").mkdir()
    fields = ["S", *(str(n) for n in range(4, 22)), "98765", "0"]
    (tmp_path / "77" / "stat").write_text(f"77 (a (b) c) {' '.join(fields)}\n")
    assert process_identity(77, proc=tmp_path) == "77-98765"


def test_without_proc_a_process_is_identified_by_its_pid(tmp_path: Path) -> None:
    no_proc = tmp_path / "no-proc"
    assert process_identity(os.getpid(), proc=no_proc) == str(os.getpid())
    assert process_identity(NO_SUCH_PID, proc=no_proc) is None


def test_directories_of_parents_that_no_longer_run_are_stale(tmp_path: Path) -> None:
    running = {1: "1-500", 2: "2-900"}
    for name in [
        "chat-metrics-1-500",  # its parent runs
        "chat-metrics-2-600",  # pid 2 runs, but it is another process
        "chat-metrics-3-700",  # pid 3 runs no more
        "chat-metrics-4",  # without a start time, pid 4 runs no more
        "chat-metrics-x",  # not a pid: not chat's
        "other-metrics-3-700",
    ]:
        (tmp_path / name).mkdir()
    (tmp_path / "chat-metrics-5-100").write_text("a file, not a directory")
    (tmp_path / "chat-metrics-6-100").symlink_to(tmp_path / "chat-metrics-3-700")

    stale = stale_dirs(tmp_path, running.get)

    assert [path.name for path in stale] == [
        "chat-metrics-2-600",
        "chat-metrics-3-700",
        "chat-metrics-4",
    ]


def test_the_test_process_is_no_worker() -> None:
    assert parent_pid() is None


def test_a_process_serving_alone_keeps_its_metrics_to_itself(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    assert prepare_metrics_dir(environ, parent=None, tmp=tmp_path) is None
    assert environ == {}
    assert list(tmp_path.iterdir()) == []


def test_a_worker_gets_its_parents_directory_and_removes_exited_parents(tmp_path: Path) -> None:
    parent = os.getppid()
    other_group = tmp_path / f"chat-metrics-{process_identity(os.getpid())}"
    other_group.mkdir()
    exited = tmp_path / f"chat-metrics-{exited_pid()}-1"
    exited.mkdir()
    (exited / "counter_1.db").write_bytes(b"")
    environ: dict[str, str] = {}

    path = prepare_metrics_dir(environ, parent=parent, tmp=tmp_path)

    assert path == tmp_path / f"chat-metrics-{process_identity(parent)}"
    assert path.is_dir()
    assert path.stat().st_mode & 0o077 == 0
    assert environ == {MULTIPROC_ENV: str(path)}
    assert sorted(tmp_path.iterdir()) == sorted([path, other_group])


def test_a_second_worker_of_the_same_parent_shares_the_directory(tmp_path: Path) -> None:
    first = prepare_metrics_dir({}, parent=os.getppid(), tmp=tmp_path)
    assert first is not None
    (first / "counter_1.db").write_bytes(b"")
    environ: dict[str, str] = {}
    assert prepare_metrics_dir(environ, parent=os.getppid(), tmp=tmp_path) == first
    assert environ == {MULTIPROC_ENV: str(first)}
    assert (first / "counter_1.db").exists()


def test_a_users_directory_is_used_as_it_is(tmp_path: Path) -> None:
    stale = tmp_path / f"chat-metrics-{NO_SUCH_PID}-1"
    stale.mkdir()
    environ = {MULTIPROC_ENV: str(tmp_path / "mine")}
    assert prepare_metrics_dir(environ, parent=os.getppid(), tmp=tmp_path) == tmp_path / "mine"
    assert environ == {MULTIPROC_ENV: str(tmp_path / "mine")}
    assert list(tmp_path.iterdir()) == [stale]


def test_a_worker_whose_parent_has_exited_serves_alone(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    assert prepare_metrics_dir(environ, parent=exited_pid(), tmp=tmp_path) is None
    assert environ == {}


def test_a_directory_planted_as_a_link_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / f"chat-metrics-{process_identity(os.getppid())}").symlink_to(elsewhere)
    environ: dict[str, str] = {}
    with pytest.raises(OSError, match="not a directory of this user"):
        prepare_metrics_dir(environ, parent=os.getppid(), tmp=tmp_path)
    assert environ == {}
