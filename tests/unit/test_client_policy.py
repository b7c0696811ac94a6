"""The client's reconnect rules: the contract's close-code table, refusals, full-jitter backoff."""

from __future__ import annotations

import pytest

from chat.client.policy import Backoff, ByeInfo, Decision, after_close, after_refusal
from chat.client.tokens import expiry, refresh_delay

SHUTDOWN = ByeInfo("shutdown", reconnect=True, retry_after_ms=2731)


@pytest.mark.parametrize(
    ("code", "bye", "expected"),
    [
        (1000, None, Decision(False, "close 1000")),
        (1001, SHUTDOWN, Decision(True, "bye: shutdown", 2.731)),
        (1001, None, Decision(True, "close 1001")),
        (1003, ByeInfo("policy", reconnect=False), Decision(False, "bye: policy")),
        (1008, ByeInfo("token_expired", reconnect=False), Decision(False, "bye: token_expired")),
        (1008, None, Decision(False, "close 1008")),
        (1009, None, Decision(False, "close 1009")),
        (1011, None, Decision(True, "close 1011")),
        (1013, ByeInfo("slow_consumer", reconnect=True), Decision(True, "bye: slow_consumer")),
        (4001, None, Decision(True, "close 4001")),
        (4499, None, Decision(True, "close 4499")),
        (4500, ByeInfo("idle_timeout", reconnect=False), Decision(False, "bye: idle_timeout")),
        (4999, None, Decision(False, "close 4999")),
        (None, None, Decision(True, "connection lost")),
        (1006, None, Decision(True, "connection lost")),
        # The server's word is final, and so is a final code whatever the bye says.
        (1013, ByeInfo("disconnected", reconnect=False), Decision(False, "bye: disconnected")),
        (1008, ByeInfo("disconnected", reconnect=True), Decision(False, "bye: disconnected")),
        (1013, ByeInfo("disconnected", True, 1500), Decision(True, "bye: disconnected", 1.5)),
    ],
)
def test_a_close_is_reconnected_as_the_contract_table_says(
    code: int | None, bye: ByeInfo | None, expected: Decision
) -> None:
    assert after_close(code, bye) == expected


@pytest.mark.parametrize(
    ("status", "renewable", "reconnect"),
    [
        (400, True, False),
        (403, True, False),
        (505, True, False),
        (401, False, False),
        (401, True, True),
        (429, False, True),
        (503, False, True),
        (None, False, True),
    ],
)
def test_a_refused_handshake_is_retried_unless_no_retry_can_change_it(
    status: int | None, renewable: bool, reconnect: bool
) -> None:
    assert after_refusal(status, can_renew_token=renewable).reconnect is reconnect


def test_backoff_bounds_double_up_to_the_cap_and_each_delay_is_a_full_jitter_of_it() -> None:
    rolls = iter([1.0] * 8 + [0.25, 0.0])
    backoff = Backoff(0.5, 10.0, lambda: next(rolls))
    assert [backoff.next_delay() for _ in range(8)] == [0.5, 1, 2, 4, 8, 10, 10, 10]
    assert backoff.next_delay() == 2.5  # a quarter of the capped bound
    assert backoff.next_delay() == 0.0
    backoff.reset()
    assert backoff.attempts == 0


def test_backoff_refuses_a_meaningless_configuration() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(0, 1, lambda: 0.5)


def test_a_tokens_exp_is_read_without_verifying_it() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMDAwMH0.sig"
    assert expiry(token) == 1_700_000_000
    assert expiry("not a jwt") is None
    assert expiry("a.!!!.c") is None
    assert expiry("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.sig") is None  # no exp


def test_a_token_is_refreshed_a_margin_before_exp_or_three_quarters_into_a_short_life() -> None:
    assert refresh_delay(3600, margin=30) == 3570
    assert refresh_delay(8, margin=30) == 6
    # Never at once, even for a token already expired: no refresh loop.
    assert refresh_delay(-1, margin=30) == 1.0
    assert refresh_delay(0.5, margin=30) == 1.0
    # Tokens that did not extend exp: the wait doubles, up to a minute.
    assert [refresh_delay(-1, margin=30, stale=n) for n in (1, 2, 3, 9)] == [2.0, 4.0, 8.0, 60.0]
    assert refresh_delay(3600, margin=30, stale=3) == 3570
