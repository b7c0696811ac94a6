"""The client's address behind trusted proxies: ``X-Forwarded-For`` and ``Forwarded``. Pure.

A proxy in front of the server makes every TCP peer the proxy itself; the
client's address travels in a header the proxy appends to. Only a peer in
``CHAT_TRUSTED_PROXIES`` is believed, and only as far as the chain of trusted
proxies goes: the list is walked from the right (the entry the nearest proxy
appended), skipping addresses that are themselves trusted proxies, and the
first untrusted address is the client. Everything to its left was written by
the client or by proxies nobody vouches for, and is never read.

``X-Forwarded-For`` is read when the request has one (nginx, HAProxy, cloud
load balancers all append to it); ``Forwarded`` (RFC 7239) only when it has
none. A trusted proxy must therefore append to ``X-Forwarded-For``, or remove
it if it speaks only ``Forwarded``.

Nothing here raises on a header: a malformed, obfuscated (``_hidden``) or
``unknown`` node stops the walk, and the answer is the nearest address known
(the proxy that wrote it), or None, meaning the TCP peer's own address stands.
The work is bounded: at most :data:`MAX_HEADER_CHARS` characters of the
headers (the rightmost), at most :data:`MAX_HOPS` entries walked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

#: Characters of a forwarding header read, from the right; the rest is never parsed.
MAX_HEADER_CHARS = 4096
#: Entries walked from the right before giving up on finding an untrusted one.
MAX_HOPS = 16

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

#: One element of ``Forwarded``: anything up to a comma that is not inside a quoted string.
_ELEMENT = re.compile(r'(?:[^",]|"(?:[^"\\]|\\.)*")+')
#: One ``token=value`` pair of an element; the value a token or a quoted string.
_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[^;"]*)\s*(?:;|$)')
#: ``[v6]`` or ``[v6]:port``.
_BRACKETED = re.compile(r"\[([^\]]+)\](?::(\d{1,5}))?")
#: ``v4:port``.
_V4_PORT = re.compile(r"([0-9.]+):(\d{1,5})")


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The networks whose forwarding headers are believed; empty trusts nobody."""

    networks: tuple[Network, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str) -> bool:
        """True when ``host`` (an address as a string) is in one of the networks.

        Anything that is not an IP address (a Unix socket path, ``unknown``) is not trusted.
        """
        address = _address(host)
        return address is not None and self._holds(address)

    def _holds(self, address: Address) -> bool:
        # Mixed versions compare False with `in`, never raise.
        return any(address in network for network in self.networks)


def parse_proxies(text: str) -> TrustedProxies:
    """``CHAT_TRUSTED_PROXIES``: a comma-separated list of addresses or CIDR networks.

    IPv4 and IPv6; a bare address is a network of one. Blank means nobody.
    Raises ValueError naming the first entry that is neither (host bits set
    under the mask, ``10.0.0.1/8``, count as a mistake too).
    """
    networks: list[Network] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ip_network(entry, strict=True))
        except ValueError:
            try:
                meant = ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (like 10.0.0.0/8, 127.0.0.1 or ::1)"
                ) from None
            raise ValueError(f"{entry!r} has host bits set: did you mean {meant}?") from None
    return TrustedProxies(tuple(networks))


def client_address(
    headers: Iterable[tuple[bytes, bytes]], trusted: TrustedProxies
) -> tuple[str, int] | None:
    """The client ``(host, port)`` that the forwarding headers of a trusted peer show.

    Call it only when the TCP peer is trusted (:meth:`TrustedProxies.trusts`):
    the headers are ASGI's, names lower-case. The port is 0 unless a
    ``Forwarded`` node gave one. None when the headers show nothing usable:
    the peer's address stands.
    """
    forwarded_for: list[bytes] = []
    forwarded: list[bytes] = []
    for name, value in headers:
        if name == b"x-forwarded-for":
            forwarded_for.append(value)
        elif name == b"forwarded":
            forwarded.append(value)
    if forwarded_for:
        nodes = _split_list(_tail(b",".join(forwarded_for)))
    elif forwarded:
        nodes = [_for_node(element) for element in _elements(_tail(b",".join(forwarded)))]
    else:
        return None
    return _walk(nodes, trusted)


def _walk(nodes: list[str | None], trusted: TrustedProxies) -> tuple[str, int] | None:
    found: tuple[str, int] | None = None
    for node in reversed(nodes[-MAX_HOPS:]):
        parsed = _node(node) if node is not None else None
        if parsed is None:
            # unknown, obfuscated or garbage: nobody knows who is behind it.
            return found
        address, port = parsed
        found = (str(address), port)
        if not trusted._holds(address):
            return found
    # Every hop walked is a trusted proxy: the leftmost is as close as we get.
    return found


def _tail(value: bytes) -> str:
    """The rightmost :data:`MAX_HEADER_CHARS` of a header, cut at a list separator."""
    text = value.decode("latin-1")
    if len(text) <= MAX_HEADER_CHARS:
        return text
    text = text[-MAX_HEADER_CHARS:]
    # The cut entry is a fragment: never read it as an address.
    return text.partition(",")[2]


def _split_list(text: str) -> list[str | None]:
    return [entry.strip() for entry in text.split(",")]


def _elements(text: str) -> list[str]:
    return [match.group(0) for match in _ELEMENT.finditer(text)]


def _for_node(element: str) -> str | None:
    """The ``for=`` value of one ``Forwarded`` element, unquoted; None without one."""
    position, end = 0, len(element)
    while position < end:
        match = _PAIR.match(element, position)
        if match is None or match.end() == position:
            return None
        name, value = match.groups()
        if name.lower() == "for":
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            return value.strip()
        position = match.end()
    return None


def _node(node: str) -> tuple[Address, int] | None:
    """Address and port of ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1`` or ``[2001:db8::1]:80``."""
    port = "0"
    host = node
    if node.startswith("["):
        bracketed = _BRACKETED.fullmatch(node)
        if bracketed is None:
            return None
        host, port = bracketed.group(1), bracketed.group(2) or "0"
    elif node.count(":") == 1:
        v4 = _V4_PORT.fullmatch(node)
        if v4 is None:
            return None
        host, port = v4.groups()
    address = _address(host)
    if address is None or int(port) > 65535:
        return None
    return address, int(port)


def _address(host: str) -> Address | None:
    try:
        address = ip_address(host)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d.
        return address.ipv4_mapped
    return address
