"""The per-session token bucket and the flood rule. Pure: ``now`` is passed in."""

from __future__ import annotations

import pytest

from chat.ratelimit import FLOOD_WINDOW, RateLimiter, Verdict

ALLOW, REFUSE, ABUSE = Verdict.ALLOW, Verdict.REFUSE, Verdict.ABUSE


def checks(limiter: RateLimiter, now: float, count: int) -> list[Verdict]:
    """The verdicts of ``count`` frames arriving at the same instant ``now``."""
    return [limiter.check(now) for _ in range(count)]


@pytest.mark.parametrize(("rate", "burst"), [(20.0, 40), (1.0, 1), (0.5, 3)])
def test_first_burst_frames_at_one_instant_are_allowed_and_the_next_refused(
    rate: float, burst: int
) -> None:
    limiter = RateLimiter(rate, burst, 0.0)
    assert checks(limiter, 0.0, burst + 1) == [ALLOW] * burst + [REFUSE]


@pytest.mark.parametrize(
    ("rate", "elapsed", "allowed"),
    [
        (2.0, 0.25, 0),
        (2.0, 0.5, 1),
        (2.0, 1.0, 2),
        (2.0, 1.5, 3),
        (4.0, 0.25, 1),
        (0.5, 2.0, 1),
        (0.5, 3.0, 1),
        (0.5, 4.0, 2),
    ],
)
def test_tokens_come_back_at_rate_per_second(rate: float, elapsed: float, allowed: int) -> None:
    limiter = RateLimiter(rate, 4, 0.0)
    assert checks(limiter, 0.0, 4) == [ALLOW] * 4
    assert checks(limiter, elapsed, allowed + 1) == [ALLOW] * allowed + [REFUSE]


def test_fractions_of_a_token_add_up() -> None:
    limiter = RateLimiter(2.0, 4, 0.0)
    assert checks(limiter, 0.0, 4) == [ALLOW] * 4
    assert limiter.check(0.25) is REFUSE
    assert limiter.check(0.5) is ALLOW


@pytest.mark.parametrize("pause", [2.0, 60.0, 1_000_000.0])
def test_tokens_never_exceed_burst_after_a_long_pause(pause: float) -> None:
    limiter = RateLimiter(2.0, 4, 0.0)
    assert checks(limiter, 0.0, 4) == [ALLOW] * 4
    assert checks(limiter, pause, 5) == [ALLOW] * 4 + [REFUSE]


def test_an_idle_bucket_starts_full_and_stays_full() -> None:
    limiter = RateLimiter(2.0, 4, 100.0)
    assert checks(limiter, 1_000.0, 5) == [ALLOW] * 4 + [REFUSE]


@pytest.mark.parametrize(("rate", "burst"), [(20.0, 40), (1.0, 1), (5.0, 3)])
def test_more_than_burst_refusals_at_a_stopped_clock_is_abuse(rate: float, burst: int) -> None:
    limiter = RateLimiter(rate, burst, 0.0)
    assert checks(limiter, 0.0, 2 * burst + 1) == [ALLOW] * burst + [REFUSE] * burst + [ABUSE]


@pytest.mark.parametrize(
    ("pause", "forgiven"),
    [
        (0.0, 0),
        (FLOOD_WINDOW / 10, 1),
        (FLOOD_WINDOW / 2, 5),
        (FLOOD_WINDOW, 10),
        (FLOOD_WINDOW * 10, 10),
    ],
)
def test_refusals_decay_at_burst_per_flood_window(pause: float, forgiven: int) -> None:
    burst = 10
    # Tokens come back at the same pace refusals are forgiven: `forgiven` of each.
    limiter = RateLimiter(burst / FLOOD_WINDOW, burst, 0.0)
    assert checks(limiter, 0.0, 2 * burst) == [ALLOW] * burst + [REFUSE] * burst
    assert checks(limiter, pause, 2 * forgiven + 1) == (
        [ALLOW] * forgiven + [REFUSE] * forgiven + [ABUSE]
    )


def test_one_frame_a_second_over_the_rate_for_a_minute_is_never_abuse() -> None:
    limiter = RateLimiter(20.0, 40, 0.0)
    assert checks(limiter, 0.0, 41) == [ALLOW] * 40 + [REFUSE]
    for second in range(1, 61):
        # 60 refusals in all: more than the burst, but spread far thinner than the window.
        assert checks(limiter, float(second), 21) == [ALLOW] * 20 + [REFUSE]


def test_a_check_at_an_earlier_instant_mints_no_tokens() -> None:
    limiter = RateLimiter(2.0, 4, 100.0)
    assert checks(limiter, 100.0, 4) == [ALLOW] * 4
    assert limiter.check(50.0) is REFUSE


def test_returning_from_an_earlier_instant_mints_no_tokens() -> None:
    limiter = RateLimiter(2.0, 4, 100.0)
    assert checks(limiter, 100.0, 4) == [ALLOW] * 4
    assert limiter.check(90.0) is REFUSE
    # No time has passed since the bucket was emptied at 100: still no token.
    assert limiter.check(100.0) is REFUSE
