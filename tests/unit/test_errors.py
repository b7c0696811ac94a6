"""The error tree (README close codes, docs/protocol.md errors): each cause and its code."""

from __future__ import annotations

import pytest

from chat.errors import (
    BinaryFrame,
    BrokerDown,
    ChatError,
    CloseCode,
    Disconnected,
    ErrorCode,
    FrameError,
    HeartbeatTimeout,
    IdleTimeout,
    InternalError,
    MessageTooBig,
    PolicyViolation,
    Rejection,
    SessionClosed,
    Shutdown,
    SlowConsumer,
)

#: The ``bye.reason`` values docs/protocol.md allows.
BYE_REASONS = {
    "shutdown",
    "idle_timeout",
    "token_expired",
    "slow_consumer",
    "policy",
    "disconnected",
}

CAUSES: list[tuple[type[SessionClosed], int, str, str | None, bool]] = [
    # (class, code, reason, bye_reason, reconnect)
    (Shutdown, 1001, "shutdown", "shutdown", True),
    (BinaryFrame, 1003, "binary_frame", "policy", False),
    (PolicyViolation, 1008, "policy", "policy", False),
    (MessageTooBig, 1009, "message_too_big", "policy", False),
    (InternalError, 1011, "internal_error", None, True),
    (SlowConsumer, 1013, "slow_consumer", "slow_consumer", True),
    (BrokerDown, 1013, "unavailable", "policy", True),
    (HeartbeatTimeout, 4001, "heartbeat_timeout", None, True),
    (IdleTimeout, 4500, "idle_timeout", "idle_timeout", False),
    (Disconnected, 1008, "disconnected", "disconnected", False),
]
CAUSE_IDS = [case[0].__name__ for case in CAUSES]


@pytest.mark.parametrize(("cause", "code"), [case[:2] for case in CAUSES], ids=CAUSE_IDS)
def test_close_code(cause: type[SessionClosed], code: int) -> None:
    assert cause().code == code


@pytest.mark.parametrize(
    ("cause", "reason"), [(case[0], case[2]) for case in CAUSES], ids=CAUSE_IDS
)
def test_reason(cause: type[SessionClosed], reason: str) -> None:
    assert cause().reason == reason


@pytest.mark.parametrize(
    ("cause", "bye_reason"), [(case[0], case[3]) for case in CAUSES], ids=CAUSE_IDS
)
def test_bye_reason(cause: type[SessionClosed], bye_reason: str | None) -> None:
    assert cause().bye_reason == bye_reason


@pytest.mark.parametrize("cause", [case[0] for case in CAUSES if case[3] is not None])
def test_bye_reason_is_one_the_protocol_documents(cause: type[SessionClosed]) -> None:
    assert cause().bye_reason in BYE_REASONS


@pytest.mark.parametrize(
    ("cause", "reconnect"), [(case[0], case[4]) for case in CAUSES], ids=CAUSE_IDS
)
def test_reconnect(cause: type[SessionClosed], reconnect: bool) -> None:
    assert cause().reconnect is reconnect


@pytest.mark.parametrize(
    ("code", "reconnect"),
    [
        (CloseCode.NORMAL, False),
        (CloseCode.GOING_AWAY, True),
        (CloseCode.UNSUPPORTED_DATA, False),
        (CloseCode.POLICY_VIOLATION, False),
        (CloseCode.MESSAGE_TOO_BIG, False),
        (CloseCode.INTERNAL_ERROR, True),
        (CloseCode.TRY_AGAIN_LATER, True),
        (CloseCode.HEARTBEAT_TIMEOUT, True),
        (CloseCode.IDLE_TIMEOUT, False),
    ],
)
def test_reconnect_follows_the_close_code(code: CloseCode, reconnect: bool) -> None:
    error = SessionClosed()
    error.code = code
    assert error.reconnect is reconnect


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (CloseCode.NORMAL, 1000),
        (CloseCode.GOING_AWAY, 1001),
        (CloseCode.UNSUPPORTED_DATA, 1003),
        (CloseCode.ABNORMAL, 1006),
        (CloseCode.POLICY_VIOLATION, 1008),
        (CloseCode.MESSAGE_TOO_BIG, 1009),
        (CloseCode.INTERNAL_ERROR, 1011),
        (CloseCode.TRY_AGAIN_LATER, 1013),
        (CloseCode.HEARTBEAT_TIMEOUT, 4001),
        (CloseCode.IDLE_TIMEOUT, 4500),
    ],
)
def test_close_code_values(code: CloseCode, value: int) -> None:
    assert code == value


@pytest.mark.parametrize(
    ("code", "value"),
    [
        (ErrorCode.BAD_REQUEST, "bad_request"),
        (ErrorCode.UNKNOWN_TYPE, "unknown_type"),
        (ErrorCode.FORBIDDEN, "forbidden"),
        (ErrorCode.NOT_JOINED, "not_joined"),
        (ErrorCode.RATE_LIMITED, "rate_limited"),
        (ErrorCode.UNAVAILABLE, "unavailable"),
    ],
)
def test_error_code_values(code: ErrorCode, value: str) -> None:
    assert code == value


@pytest.mark.parametrize("cause", [case[0] for case in CAUSES], ids=CAUSE_IDS)
def test_every_cause_is_a_chat_error(cause: type[SessionClosed]) -> None:
    assert isinstance(cause(), ChatError)


def test_retry_after_defaults_to_zero() -> None:
    assert Shutdown().retry_after_ms == 0


def test_retry_after_is_kept() -> None:
    assert Shutdown(retry_after_ms=1500).retry_after_ms == 1500


def test_session_closed_str_is_code_and_reason() -> None:
    assert str(IdleTimeout()) == "4500 idle_timeout"


def test_rejection_carries_status_reason_and_detail() -> None:
    error = Rejection(429, "too_many_sessions", "too many sessions for this user")
    assert isinstance(error, ChatError)
    assert error.status == 429
    assert error.reason == "too_many_sessions"
    assert error.detail == "too many sessions for this user"
    assert str(error) == "too many sessions for this user"


def test_frame_error_carries_code_detail_and_frame_id() -> None:
    error = FrameError(ErrorCode.NOT_JOINED, "join the room first", "c1")
    assert isinstance(error, ChatError)
    assert error.code is ErrorCode.NOT_JOINED
    assert error.detail == "join the room first"
    assert error.frame_id == "c1"
    assert str(error) == "join the room first"


def test_frame_error_without_id() -> None:
    assert FrameError(ErrorCode.BAD_REQUEST, "invalid JSON").frame_id is None


def test_a_disconnect_that_allows_reconnecting_is_1013_after_a_jittered_delay() -> None:
    error = Disconnected("maintenance", reconnect=True)
    assert (error.code, error.reconnect, error.bye_detail) == (1013, True, "maintenance")
    assert 1000 <= error.retry_after_ms < 5000


def test_a_disconnect_for_good_is_1008_with_no_delay() -> None:
    error = Disconnected("spam")
    assert (error.code, error.reconnect, error.retry_after_ms) == (1008, False, 0)
    assert error.bye_detail == "spam"
    assert Disconnected("").bye_detail is None


def test_only_a_disconnect_carries_a_bye_detail() -> None:
    assert all(cause().bye_detail is None for cause, *_ in CAUSES if cause is not Disconnected)
