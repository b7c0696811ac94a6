"""Contract tests: every private name of Hypercorn (and wsproto) the hooks rely on is there.

One test per name of :data:`chat.hypercorn_hooks.names.PRIVATE_NAMES`: when a
Hypercorn release moves one, the failure says which, and which hook needs
updating (``chat/hypercorn_hooks/``), before anything serves.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.extensions import PerMessageDeflate

from chat.hypercorn_hooks import SUPPORTED_HYPERCORN
from chat.hypercorn_hooks.names import PRIVATE_NAMES, PrivateName, missing


@pytest.mark.parametrize("name", PRIVATE_NAMES, ids=lambda n: f"{n.module}.{n.name}")
def test_each_private_name_is_where_its_hook_expects_it(name: PrivateName) -> None:
    try:
        name.resolve()
    except LookupError as error:
        pytest.fail(
            f"Hypercorn moved a name chat.hypercorn_hooks.{name.hook} relies on: {error}."
            f" The hooks were written against Hypercorn {SUPPORTED_HYPERCORN}."
        )


def test_nothing_is_missing() -> None:
    assert missing() == []


def test_a_moved_name_or_a_changed_signature_is_reported_with_its_hook() -> None:
    gone = PrivateName("hypercorn.asyncio.run", "no_such_name", "shutdown")
    with pytest.raises(LookupError, match=r"hypercorn\.asyncio\.run\.no_such_name.*shutdown"):
        gone.resolve()
    changed = PrivateName("hypercorn.asyncio.tcp_server", "TCPServer.run", "handle", ("x",))
    with pytest.raises(LookupError, match=r"takes \('self',\), not \('x',\)"):
        changed.resolve()


# wsproto's instance attributes the websocket hook reads or sets (not on the classes).


@pytest.mark.parametrize(
    "attribute", ["_inbound_compressed", "_inbound_is_compressible", "_decompressor"]
)
def test_permessage_deflate_keeps_the_state_the_capped_inflater_reads(attribute: str) -> None:
    assert hasattr(PerMessageDeflate(), attribute), (
        f"wsproto's PerMessageDeflate has no {attribute}: update"
        " chat/hypercorn_hooks/websocket.py (CappedDeflate)"
    )


def test_a_wsproto_connection_keeps_its_state_where_the_hook_sets_it() -> None:
    connection = Connection(ConnectionType.SERVER)
    assert hasattr(connection, "_state"), (
        "wsproto's Connection has no _state: update"
        " chat/hypercorn_hooks/websocket.py (RecordingConnection._fail)"
    )


def test_importing_the_app_loads_none_of_the_modules_the_hooks_patch() -> None:
    # install() checks the names before it patches; a module imported earlier,
    # at import of the app, would fail the app's start instead of being skipped.
    script = (
        "import sys, chat.hypercorn_hooks, chat.app;"
        "print(','.join(m for m in sys.modules if m.startswith('hypercorn')))"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    patched = {name.module for name in PRIVATE_NAMES if name.module.startswith("hypercorn")}
    assert patched, "the hooks patch Hypercorn modules"
    assert set(found.split(",")) & patched == set()
