"""Run Autobahn TestSuite cases against a chat server with kosoku, each case in its own room.

    python -m tests.e2e.fuzzingclient ws://127.0.0.1:8000 '1.*' '9.*' --concurrency 2

kosoku's fuzzing client opens every case of a run on the one URL it is given,
but a plain-text room echoes each frame to every member: cases running side by
side in one room would receive each other's echoes, and a late echo of a
finished case could reach the next one. So each case is a run of its own, on
its own room ``/ws/autobahn-<case id>``, at most ``--concurrency`` at a time.

Prints a JSON list on stdout, one object per case in case order: kosoku's
verdicts (``passed`` is Autobahn's rule: ``behavior`` and ``behavior_close``
both OK, NON-STRICT or INFORMATIONAL), their explanations, and the close code
and reason the server sent. Exits 2 when a pattern matches no case.

It runs in a process of its own, not inside pytest: importing kosoku's case
files puts their folders (modules named ``case``, ``autobahn``,
``pkg_resources``) first on ``sys.path`` and patches ``binascii.b2a_hex``.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kosoku import FailureError, run_fuzzingclient

if TYPE_CHECKING:
    from kosoku._kosoku import CaseResult

ROOM_PREFIX = "autobahn-"


def select(patterns: Sequence[str]) -> list[str]:
    """The ids of kosoku's cases matching any of ``patterns`` (``*`` globs), in case order.

    Raises :class:`LookupError` naming a pattern that matches no case.
    """
    from kosoku.cases import CASES  # loads the case files: see the module's docstring

    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(case_id, pattern) for case_id in CASES):
            raise LookupError(f"no Autobahn case matches {pattern!r}")
    return [
        case_id
        for case_id in CASES
        if any(fnmatch.fnmatchcase(case_id, pattern) for pattern in patterns)
    ]


def summary(result: CaseResult) -> dict[str, Any]:
    """What the test reads of one case's result."""
    return {
        "case": result.case_id,
        "description": result.description,
        "behavior": result.behavior.value,
        "behavior_close": result.behavior_close.value,
        "passed": result.passed,
        "result": result.result,
        "result_close": result.result_close,
        "remote_close_code": result.remote_close_code,
        "remote_close_reason": result.remote_close_reason,
        "duration_ms": result.duration,
    }


async def run_case(base_url: str, case_id: str) -> CaseResult:
    """Run one case on its own room; its result, passed or not."""
    try:
        results = await run_fuzzingclient(f"{base_url}/ws/{ROOM_PREFIX}{case_id}", [case_id])
    except FailureError as failure:
        results = failure.results
    [result] = results
    return result


async def run_cases(base_url: str, case_ids: Sequence[str], concurrency: int) -> list[CaseResult]:
    """Run ``case_ids``, at most ``concurrency`` at once; their results in the same order."""
    limit = asyncio.Semaphore(concurrency)

    async def one(case_id: str) -> CaseResult:
        async with limit:
            return await run_case(base_url, case_id)

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(case_id)) for case_id in case_ids]
    return [task.result() for task in tasks]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.fuzzingclient")
    parser.add_argument("url", help="the server's base URL, e.g. ws://127.0.0.1:8000")
    parser.add_argument("patterns", nargs="+", help="case ids or * globs, e.g. 9.* or 12.1.*")
    parser.add_argument("--concurrency", type=int, default=2, help="cases run at once")
    args = parser.parse_args(argv)
    try:
        case_ids = select(args.patterns)
    except LookupError as error:
        parser.error(str(error))
    started = time.monotonic()
    results = asyncio.run(run_cases(args.url.rstrip("/"), case_ids, max(1, args.concurrency)))
    passed = sum(result.passed for result in results)
    print(
        f"{len(results)} cases, {passed} passed, in {time.monotonic() - started:.1f} s",
        file=sys.stderr,
    )
    json.dump([summary(result) for result in results], sys.stdout, indent=1)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    sys.stderr.flush()
    # kosoku 0.1.0's runtime threads sometimes abort the interpreter's
    # finalization (SIGABRT after all output is written): skip it.
    os._exit(0)
