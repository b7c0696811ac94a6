"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright.

Playwright's own browser download is never used (it is not possible here, and
CI installs Debian's package with apt-get): the browser is launched with
``executable_path``. Without Playwright or a ``chromium`` binary the tests
skip, saying why, unless ``REQUIRE_BROWSER=1`` is set (CI sets it), in which
case they fail.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

#: Where Debian's package puts it (also looked up on the PATH).
CANDIDATES = ("chromium", "/usr/bin/chromium", "chromium-browser")
#: Screenshots of the pages, kept after the run (git-ignored).
ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts" / "screenshots"


def chromium_path() -> str:
    """The chromium binary; skips (or fails under ``REQUIRE_BROWSER=1``) without one."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing("Playwright for Python is not installed (pip install -e '.[test]')")
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    missing("no chromium binary (apt-get install chromium)")
    raise AssertionError("unreachable")


def missing(why: str) -> None:
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {why}")
    pytest.skip(why)
