from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Every async test runs once, on asyncio (the backend Hypercorn's hooks serve)."""
    return "asyncio"
