"""No WebSockets over HTTP/2.

Hypercorn speaks HTTP/2 over cleartext whatever ``alpn_protocols`` says, and
advertises RFC 8441 WebSockets (``SETTINGS_ENABLE_CONNECT_PROTOCOL = 1``).
Over HTTP/2 one TCP connection carries many streams and never pushes back on
one: a member that stopped reading grew the server by 250 MiB in 60 s and
could be cut neither as a slow consumer nor alone. The setting is advertised
as 0, so a browser on an HTTP/2 connection opens its WebSockets over
HTTP/1.1; a client that tries anyway is refused with 505 by the node
(``tests/e2e/test_http2.py``).
"""

from __future__ import annotations

from typing import Any

from h2.settings import SettingCodes, Settings
from hypercorn.protocol.h2 import H2Protocol


def patch_http2() -> None:
    """Stop Hypercorn's HTTP/2 connections from inviting WebSockets."""
    original_init = H2Protocol.__init__

    def init(self: H2Protocol, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        # Hypercorn's own settings, but for the one that invites WebSockets.
        self.connection.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: self.config.h2_max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: self.config.h2_max_header_list_size,
                SettingCodes.ENABLE_CONNECT_PROTOCOL: 0,
            },
        )

    H2Protocol.__init__ = init  # type: ignore[method-assign]
