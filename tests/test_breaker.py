"""The circuit breaker state machine, driven by a fake clock (nothing here sleeps)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from resilience import breaker as breaker_module
from resilience import config as runtime_config
from resilience.breaker import CLOSED, HALF_OPEN, OPEN, BreakerEvent, CircuitBreaker, get_breaker
from resilience.errors import CircuitOpenError, OllamaConfigError, OllamaUnavailable
from tests.fixtures_resilience import FakeClock, breaker_config


def make(clock: FakeClock, **changes: object) -> CircuitBreaker:
    return CircuitBreaker("embed", breaker_config(**changes), timer=clock)


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(OllamaUnavailable), breaker.guard():
            raise OllamaUnavailable("timeout")


def succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        assert breaker.call(lambda: "ok") == "ok"


def open_breaker(breaker: CircuitBreaker) -> None:
    fail(breaker, breaker.config.failure_threshold)
    assert breaker.state == OPEN


def test_closed_breaker_lets_calls_through(clock: FakeClock) -> None:
    breaker = make(clock)
    succeed(breaker, 10)
    snap = breaker.snapshot()
    assert snap["state"] == CLOSED
    assert snap["success_count"] == 10
    assert snap["total_calls"] == 10


def test_opens_after_consecutive_failures(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=3, window_size=100)
    fail(breaker, 2)
    assert breaker.state == CLOSED
    fail(breaker)
    assert breaker.state == OPEN
    assert breaker.transitions[-1]["reason"] == "3 consecutive failures"


def test_success_resets_consecutive_failures(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=3, window_size=100)
    for _ in range(5):
        fail(breaker, 2)
        succeed(breaker)
    assert breaker.state == CLOSED
    assert breaker.consecutive_failures == 0


def test_opens_when_window_failure_rate_reaches_threshold(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=100, window_size=10, failure_rate_threshold=0.5)
    for _ in range(4):
        succeed(breaker)
        fail(breaker)
    succeed(breaker)
    assert breaker.state == CLOSED  # 4 failures in 9 calls: the window is not full yet
    fail(breaker)
    assert breaker.state == OPEN  # 5 of the last 10
    assert "failure rate 50%" in breaker.transitions[-1]["reason"]


def test_failure_rate_waits_for_a_full_window(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=100, window_size=10, failure_rate_threshold=0.5)
    fail(breaker, 1)
    succeed(breaker)
    fail(breaker, 1)
    assert breaker.state == CLOSED  # 2 of 3 failed, but 3 calls say little


def test_open_breaker_rejects_without_calling(clock: FakeClock) -> None:
    breaker = make(clock, recovery_timeout=30)
    open_breaker(breaker)
    clock.advance(10)
    calls = []
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: calls.append(1))
    assert calls == []
    assert info.value.reason == "circuit open"
    assert info.value.breaker == "embed"
    assert info.value.retry_after == pytest.approx(20)
    assert breaker.snapshot()["rejected_calls"] == 1


def test_half_open_after_recovery_timeout(clock: FakeClock) -> None:
    breaker = make(clock, recovery_timeout=30)
    open_breaker(breaker)
    clock.advance(29.9)
    assert breaker.state == OPEN
    clock.advance(0.1)
    assert breaker.state == HALF_OPEN
    assert breaker.retry_after() == 0


def test_half_open_admits_at_most_max_calls_at_a_time(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=2, success_threshold=5)
    open_breaker(breaker)
    clock.advance(60)
    with breaker.guard(), breaker.guard():
        with pytest.raises(CircuitOpenError), breaker.guard():
            pass
        assert breaker.snapshot()["half_open_running"] == 2
    # Both trials finished: their slots are free again.
    with breaker.guard():
        pass
    assert breaker.state == HALF_OPEN


def test_success_threshold_above_half_open_limit_still_closes(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=1, success_threshold=3)
    open_breaker(breaker)
    clock.advance(60)
    succeed(breaker, 2)
    assert breaker.state == HALF_OPEN
    succeed(breaker)
    assert breaker.state == CLOSED
    assert breaker.transitions[-1]["reason"] == "3 trial calls succeeded"


def test_any_half_open_failure_reopens(clock: FakeClock) -> None:
    breaker = make(clock, success_threshold=3, recovery_timeout=30)
    open_breaker(breaker)
    clock.advance(30)
    succeed(breaker, 2)
    fail(breaker)
    assert breaker.state == OPEN
    assert breaker.retry_after() == pytest.approx(30)  # a full recovery timeout from the re-opening


def test_closing_forgets_old_failures(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=3, success_threshold=1)
    open_breaker(breaker)
    clock.advance(60)
    succeed(breaker)
    assert breaker.state == CLOSED
    fail(breaker, 2)
    assert breaker.state == CLOSED


def test_slow_calls_count_as_failures(clock: FakeClock) -> None:
    breaker = make(clock, slow_call_seconds=2.0, failure_threshold=2)
    for _ in range(2):
        with breaker.guard():
            clock.advance(2.5)
    assert breaker.state == OPEN
    assert breaker.failure_count == 2


def test_config_error_is_neither_success_nor_failure(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=2)
    for _ in range(5):
        with pytest.raises(OllamaConfigError), breaker.guard():
            raise OllamaConfigError("model 'x' not found")
    snap = breaker.snapshot()
    assert snap["state"] == CLOSED
    assert (snap["failure_count"], snap["success_count"], snap["ignored_count"]) == (0, 0, 5)


def test_config_error_in_half_open_frees_the_slot(clock: FakeClock) -> None:
    breaker = make(clock, half_open_max_calls=1, success_threshold=1)
    open_breaker(breaker)
    clock.advance(60)
    with pytest.raises(OllamaConfigError), breaker.guard():
        raise OllamaConfigError("bad request")
    assert breaker.state == HALF_OPEN
    succeed(breaker)
    assert breaker.state == CLOSED


def test_caller_can_classify_the_outcome(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1)
    with breaker.guard() as trial:
        trial.failure()  # e.g. a 200 whose body turned out useless
    assert breaker.state == OPEN


def test_disabled_breaker_passes_through_but_counts(clock: FakeClock) -> None:
    breaker = make(clock, enabled=False, failure_threshold=1)
    fail(breaker, 5)
    succeed(breaker)
    snap = breaker.snapshot()
    assert snap["state"] == CLOSED
    assert (snap["failure_count"], snap["success_count"], snap["total_calls"]) == (5, 1, 6)


def test_force_open_holds_until_reset(clock: FakeClock) -> None:
    breaker = make(clock, recovery_timeout=10)
    breaker.force_open()
    clock.advance(1000)
    assert breaker.state == OPEN
    with pytest.raises(CircuitOpenError):
        succeed(breaker)
    breaker.reset()
    assert breaker.state == CLOSED
    succeed(breaker)
    assert [t["to"] for t in breaker.transitions] == [OPEN, CLOSED]


def test_reset_keeps_cumulative_counts(clock: FakeClock) -> None:
    breaker = make(clock)
    open_breaker(breaker)
    breaker.reset()
    snap = breaker.snapshot()
    assert snap["consecutive_failures"] == 0
    assert snap["failure_count"] == breaker.config.failure_threshold


def test_outcome_of_a_call_admitted_before_a_transition_does_not_count(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1, half_open_max_calls=1, success_threshold=1)
    with breaker.guard():
        breaker.force_open()
        breaker.reset()
        fail(breaker)  # opens
        clock.advance(60)
        assert breaker.state == HALF_OPEN
    # The slow call admitted while closed succeeded, but it was no trial: still half-open.
    assert breaker.state == HALF_OPEN
    assert breaker.success_count == 1


def test_snapshot_reports_counts_config_and_transitions(clock: FakeClock) -> None:
    breaker = make(clock)
    breaker.wall_timer = lambda: 1_700_000_000.0
    open_breaker(breaker)
    snap = breaker.snapshot()
    assert snap["state"] == OPEN
    assert snap["failure_count"] == snap["consecutive_failures"] == breaker.config.failure_threshold
    assert snap["last_failure_time"] == snap["last_state_change"] == 1_700_000_000.0
    assert snap["config"]["failure_threshold"] == breaker.config.failure_threshold
    assert snap["transitions"] == [
        {"time": 1_700_000_000.0, "from": CLOSED, "to": OPEN, "reason": "3 consecutive failures"}
    ]


def test_observers_see_outcomes_and_transitions(clock: FakeClock) -> None:
    breaker = make(clock, failure_threshold=1)
    seen: list[BreakerEvent] = []

    def broken(event: BreakerEvent) -> None:
        raise RuntimeError("observers must not break the breaker")

    breaker.observers.extend([seen.append, broken])
    succeed(breaker)
    fail(breaker)
    with pytest.raises(CircuitOpenError):
        succeed(breaker)
    assert [(e.kind, e.state) for e in seen] == [
        ("success", CLOSED),
        ("failure", CLOSED),
        ("transition", OPEN),
        ("rejected", OPEN),
    ]


def test_process_observers_see_every_breaker(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(breaker_module, "observers", [lambda e: seen.append(f"{e.breaker}:{e.kind}")])
    succeed(make(clock))
    succeed(CircuitBreaker("chat", breaker_config(), timer=clock))
    assert seen == ["embed:success", "chat:success"]


def test_transitions_are_logged(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    breaker = make(clock)
    with caplog.at_level(logging.INFO, logger="resilience.breaker"):
        open_breaker(breaker)
    assert "breaker embed: closed -> open (3 consecutive failures)" in caplog.text


def test_registry_applies_new_config_and_keeps_state(resilience_config: Callable[..., object]) -> None:
    breaker = get_breaker("embed")
    assert get_breaker("embed") is breaker
    fail(breaker, breaker.config.failure_threshold)
    assert breaker.state == OPEN
    resilience_config(breaker={"recovery_timeout": 5.0, "failure_threshold": 10})
    assert get_breaker("embed") is breaker
    assert breaker.config == runtime_config.current().breaker
    assert breaker.state == OPEN
    assert breaker.consecutive_failures == 3
