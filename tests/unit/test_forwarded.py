"""The client address behind trusted proxies (chat.forwarded). Pure, table-driven."""

from __future__ import annotations

import time

import pytest

from chat.forwarded import (
    MAX_HEADER_CHARS,
    MAX_HOPS,
    TrustedProxies,
    client_address,
    parse_proxies,
)

#: nginx on the box, and a load balancer network in front of it.
PROXIES = parse_proxies("127.0.0.1, 10.0.0.0/8, 2001:db8:ffff::/48")


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    """ASGI headers: ``x_forwarded_for="..."`` becomes ``(b"x-forwarded-for", b"...")``."""
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in values.items()]


@pytest.mark.parametrize(
    ("xff", "client"),
    [
        ("203.0.113.7", ("203.0.113.7", 0)),
        (" 203.0.113.7 ", ("203.0.113.7", 0)),
        # A client-written entry on the left is never read.
        ("6.6.6.6, 203.0.113.7", ("203.0.113.7", 0)),
        # Trusted hops are skipped from the right.
        ("6.6.6.6, 203.0.113.7, 10.1.2.3", ("203.0.113.7", 0)),
        ("203.0.113.7, 10.1.2.3, 10.9.9.9, 127.0.0.1", ("203.0.113.7", 0)),
        ("2001:db8::1", ("2001:db8::1", 0)),
        ("[2001:db8::1]", ("2001:db8::1", 0)),
        ("[2001:db8::1]:4711", ("2001:db8::1", 4711)),
        ("203.0.113.7:4711", ("203.0.113.7", 4711)),
        ("203.0.113.7, 2001:db8:ffff::5", ("203.0.113.7", 0)),
        # IPv4 seen through a dual-stack socket is the IPv4 address.
        ("::ffff:203.0.113.7", ("203.0.113.7", 0)),
        ("::ffff:10.0.0.1, ", None),
        # Every hop trusted: the leftmost is as near to the client as we know.
        ("10.0.0.2, 10.0.0.1", ("10.0.0.2", 0)),
        # Garbage, unknown or an empty entry on the right: the peer stands.
        ("", None),
        ("unknown", None),
        ("203.0.113.7, garbage", None),
        ("203.0.113.7,", None),
        ("999.1.1.1", None),
        ("203.0.113.7:99999", None),
        ("[2001:db8::1", None),
        ("[nope]:80", None),
        ("1.2.3.4:80:90", None),
        # Garbage behind a trusted hop: that hop is the nearest known address.
        ("203.0.113.7, unknown, 10.0.0.1", ("10.0.0.1", 0)),
        ("203.0.113.7, <script>, 10.0.0.1", ("10.0.0.1", 0)),
    ],
)
def test_x_forwarded_for_is_walked_from_the_right_to_the_first_untrusted_address(
    xff: str, client: tuple[str, int] | None
) -> None:
    assert client_address(headers(x_forwarded_for=xff), PROXIES) == client


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        ("for=203.0.113.7", ("203.0.113.7", 0)),
        ("For=203.0.113.7", ("203.0.113.7", 0)),
        ('for="[2001:db8::1]:4711"', ("2001:db8::1", 4711)),
        ('for="[2001:db8::1]"', ("2001:db8::1", 0)),
        ('for="203.0.113.7:80"', ("203.0.113.7", 80)),
        ("for=203.0.113.7;proto=https;by=10.0.0.1", ("203.0.113.7", 0)),
        ("proto=https;for=203.0.113.7", ("203.0.113.7", 0)),
        ("for=6.6.6.6, for=203.0.113.7", ("203.0.113.7", 0)),
        ("for=203.0.113.7, for=10.0.0.1", ("203.0.113.7", 0)),
        # A comma inside a quoted string does not split an element.
        ('for=6.6.6.6;ext="a, for=1.1.1.1", for=203.0.113.7', ("203.0.113.7", 0)),
        ('for=203.0.113.7;ext="a, for=1.1.1.1"', ("203.0.113.7", 0)),
        ('for="\\[2001:db8::1\\]"', ("2001:db8::1", 0)),
        # Obfuscated and unknown nodes are never an address.
        ("for=unknown", None),
        ("for=_hidden", None),
        ('for="_gazonk:_port"', None),
        ("for=203.0.113.7, for=_hidden, for=10.0.0.1", ("10.0.0.1", 0)),
        # An element without for=, or one that does not parse: nothing known past it.
        ("proto=https", None),
        ("for=203.0.113.7, by=10.0.0.1", None),
        ("for", None),
        ('for="[2001:db8::1]:4711', None),
        ("for=[2001:db8::1]:4711", ("2001:db8::1", 4711)),
        ("=;=;=", None),
        ('for="203.0.113.7', None),
    ],
)
def test_forwarded_for_nodes_are_walked_like_x_forwarded_for(
    forwarded: str, client: tuple[str, int] | None
) -> None:
    assert client_address(headers(forwarded=forwarded), PROXIES) == client


def test_x_forwarded_for_wins_over_forwarded() -> None:
    both = headers(forwarded="for=6.6.6.6", x_forwarded_for="203.0.113.7")
    assert client_address(both, PROXIES) == ("203.0.113.7", 0)


def test_repeated_header_lines_are_one_list_in_order() -> None:
    lines = [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"203.0.113.7, 10.0.0.1")]
    assert client_address(lines, PROXIES) == ("203.0.113.7", 0)


def test_no_forwarding_header_leaves_the_peer() -> None:
    assert client_address(headers(host="example.com"), PROXIES) is None


def test_only_the_rightmost_hops_are_walked() -> None:
    # More trusted hops than MAX_HOPS: the walk stops at the last one it read.
    hops = [f"10.0.0.{n}" for n in range(1, MAX_HOPS + 5)]
    assert client_address(headers(x_forwarded_for=", ".join(hops)), PROXIES) == (hops[4], 0)


def test_an_overlong_header_is_read_from_its_right_end_and_never_from_a_cut_entry() -> None:
    padding = "6.6.6.6, " * (MAX_HEADER_CHARS // 4)
    xff = padding + "203.0.113.7, 10.0.0.1"
    assert client_address(headers(x_forwarded_for=xff), PROXIES) == ("203.0.113.7", 0)
    # The cut leaves "6.6.6" of a full address on the left: never read as one.
    cut = "1" * (MAX_HEADER_CHARS - 12) + "6.6.6.6, 10.0.0.1"
    assert client_address(headers(x_forwarded_for=cut), PROXIES) == ("10.0.0.1", 0)
    assert client_address(headers(x_forwarded_for="1" * 10 * MAX_HEADER_CHARS), PROXIES) is None


@pytest.mark.parametrize(
    "hostile",
    [
        "for=" + '"' * 100_000,
        '"' + "\\" * 100_000,
        "," * 100_000,
        ";" * 100_000,
        "for=1;" * 20_000,
        "a=" + "b" * 100_000,
    ],
)
def test_hostile_headers_cost_bounded_time(hostile: str) -> None:
    started = time.perf_counter()
    for name in ("forwarded", "x_forwarded_for"):
        client_address(headers(**{name: hostile}), PROXIES)
    # Generous for a slow CI machine; an unbounded parse takes seconds.
    assert time.perf_counter() - started < 0.2


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", False),
        ("10.200.0.1", True),
        ("11.0.0.1", False),
        ("2001:db8:ffff::1", True),
        ("2001:db8::1", False),
        ("::ffff:127.0.0.1", True),
        ("unknown", False),
        ("/run/chat.sock", False),
        ("", False),
    ],
)
def test_trusts_only_addresses_in_the_networks(peer: str, trusted: bool) -> None:
    assert PROXIES.trusts(peer) is trusted


def test_nobody_is_trusted_by_default() -> None:
    assert not TrustedProxies()
    assert not TrustedProxies().trusts("127.0.0.1")
    assert not parse_proxies(" , ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "'nope' is not an IP address or network"),
        ("127.0.0.1, 10.0.0.0/33", "'10.0.0.0/33' is not an IP address or network"),
        ("10.0.0.1/8", "'10.0.0.1/8' has host bits set: did you mean 10.0.0.0/8?"),
        ("localhost", "'localhost' is not an IP address or network"),
    ],
)
def test_a_bad_entry_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("?", r"\?")):
        parse_proxies(text)
