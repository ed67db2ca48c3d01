"""Circuit breakers for the calls to Ollama, one per upstream operation (``embed``, ``chat``).

When Ollama is down, every request would otherwise wait for its timeouts and retries before
failing; an open breaker fails at once instead, so the site degrades in microseconds and the
struggling server gets room to recover. After ``recovery_timeout`` a few trial calls probe it.

States: CLOSED (calls flow) → OPEN (calls rejected) → HALF_OPEN (at most
``half_open_max_calls`` trials running at a time) → CLOSED after ``success_threshold`` trial
successes, or back to OPEN on any trial failure.

The lock guards state changes only; it is never held while the protected call runs. Observers are
called outside the lock, so a slow metrics exporter cannot stall the breaker.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from resilience import config as runtime_config
from resilience.config import BreakerConfig
from resilience.errors import CircuitOpenError, OllamaConfigError

logger = logging.getLogger("resilience.breaker")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

SUCCESS = "success"
FAILURE = "failure"
IGNORED = "ignored"
REJECTED = "rejected"
TRANSITION = "transition"

MAX_TRANSITIONS = 50

T = TypeVar("T")


@dataclass(frozen=True)
class BreakerEvent:
    """What observers receive: a call outcome or a state transition."""

    breaker: str
    kind: str  # success | failure | ignored | rejected | transition
    state: str  # the state after the event
    from_state: str = ""
    reason: str = ""
    duration: float = 0.0


Observer = Callable[[BreakerEvent], None]

# Observers of every breaker in the process (metrics subscribe here once).
observers: list[Observer] = []


class Trial:
    """One admitted call. The caller may classify its outcome before the guard records it."""

    __slots__ = ("generation", "half_open", "outcome", "started")

    def __init__(self, generation: int, half_open: bool, started: float) -> None:
        self.generation = generation
        self.half_open = half_open
        self.started = started
        self.outcome: str | None = None

    def success(self) -> None:
        self.outcome = SUCCESS

    def failure(self) -> None:
        self.outcome = FAILURE

    def ignore(self) -> None:
        """Neither success nor failure: the call said nothing about Ollama's health."""
        self.outcome = IGNORED


class CircuitBreaker:
    """A thread-safe circuit breaker; ``timer`` is swappable so tests never sleep."""

    wall_timer: Callable[[], float] = time.time

    # Exceptions that say nothing about the upstream's health (also: anything that is not an
    # Exception, such as GeneratorExit when a stream's consumer goes away).
    ignored_exceptions: tuple[type[BaseException], ...] = (OllamaConfigError,)

    def __init__(
        self, name: str, config: BreakerConfig | None = None, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self.timer = timer
        self.observers: list[Observer] = []
        self._lock = threading.Lock()
        self._state = CLOSED
        self._generation = 0  # bumped on every transition: late outcomes of older calls are stale
        self._forced = False
        self._opened_at = 0.0
        self._window: deque[bool] = deque(maxlen=max(1, self.config.window_size))
        self._half_open_running = 0
        self._half_open_successes = 0
        self.consecutive_failures = 0
        self.success_count = 0
        self.failure_count = 0
        self.ignored_count = 0
        self.rejected_count = 0
        self.total_calls = 0  # every call offered, including rejected ones
        self.last_failure_time: float | None = None
        self.last_state_change: float | None = None
        self.transitions: deque[dict[str, Any]] = deque(maxlen=MAX_TRANSITIONS)

    # -- public API ---------------------------------------------------------------------------

    @property
    def state(self) -> str:
        events: list[BreakerEvent] = []
        with self._lock:
            self._maybe_half_open(events)
            state = self._state
        self._notify(events)
        return state

    @contextmanager
    def guard(self) -> Iterator[Trial]:
        """Admit one call or raise CircuitOpenError; record its outcome when the block exits.

        Exiting normally is a success; an exception is a failure unless it is one of
        ``ignored_exceptions`` or the caller classified the trial itself.
        """
        trial = self._admit()
        try:
            yield trial
        except BaseException as exc:
            if trial.outcome is None:
                ignored = not isinstance(exc, Exception) or isinstance(exc, self.ignored_exceptions)
                trial.outcome = IGNORED if ignored else FAILURE
            raise
        finally:
            if trial.outcome is None:
                trial.outcome = SUCCESS
            self._record(trial)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` under the breaker with the default classification of ``guard``."""
        with self.guard():
            return fn(*args, **kwargs)

    def retry_after(self) -> float:
        """Seconds until the next trial call may be admitted (0 when calls flow)."""
        with self._lock:
            return self._retry_after_locked()

    def configure(self, config: BreakerConfig) -> None:
        """Apply new thresholds, keeping the state and the recent outcomes."""
        with self._lock:
            if config == self.config:
                return
            self.config = config
            self._window = deque(self._window, maxlen=max(1, config.window_size))

    def force_open(self, reason: str = "forced open") -> None:
        """Reject every call until ``reset()``: an operator takes Ollama out of service."""
        events: list[BreakerEvent] = []
        with self._lock:
            self._forced = True
            self._transition(OPEN, reason, events)
        self._notify(events)

    def reset(self, reason: str = "reset") -> None:
        """Close the breaker and forget recent failures; cumulative counts are kept for metrics."""
        events: list[BreakerEvent] = []
        with self._lock:
            self._forced = False
            self._transition(CLOSED, reason, events)
        self._notify(events)

    def snapshot(self) -> dict[str, Any]:
        events: list[BreakerEvent] = []
        with self._lock:
            self._maybe_half_open(events)
            data = {
                "name": self.name,
                "state": self._state,
                "forced": self._forced,
                "failure_count": self.failure_count,
                "success_count": self.success_count,
                "ignored_count": self.ignored_count,
                "consecutive_failures": self.consecutive_failures,
                "total_calls": self.total_calls,
                "rejected_calls": self.rejected_count,
                "half_open_running": self._half_open_running,
                "retry_after": self._retry_after_locked(),
                "last_failure_time": self.last_failure_time,
                "last_state_change": self.last_state_change,
                "config": dataclasses.asdict(self.config),
                "transitions": list(self.transitions),
            }
        self._notify(events)
        return data

    # -- state machine (call with the lock held) ----------------------------------------------

    def _admit(self) -> Trial:
        events: list[BreakerEvent] = []
        rejected: CircuitOpenError | None = None
        with self._lock:
            self.total_calls += 1
            now = self.timer()
            if not self.config.enabled:
                trial = Trial(self._generation, False, now)
            else:
                self._maybe_half_open(events)
                if self._state == CLOSED:
                    trial = Trial(self._generation, False, now)
                elif self._state == HALF_OPEN and self._half_open_running < self.config.half_open_max_calls:
                    self._half_open_running += 1
                    trial = Trial(self._generation, True, now)
                else:
                    self.rejected_count += 1
                    rejected = CircuitOpenError(self.name, self._retry_after_locked())
                    events.append(BreakerEvent(self.name, REJECTED, self._state))
        self._notify(events)
        if rejected is not None:
            raise rejected
        return trial

    def _record(self, trial: Trial) -> None:
        events: list[BreakerEvent] = []
        with self._lock:
            duration = self.timer() - trial.started
            outcome = trial.outcome or SUCCESS
            slow = self.config.slow_call_seconds
            if outcome == SUCCESS and slow > 0 and duration > slow:
                outcome = FAILURE
            if outcome == SUCCESS:
                self.success_count += 1
            elif outcome == FAILURE:
                self.failure_count += 1
                self.last_failure_time = self.wall_timer()
            else:
                self.ignored_count += 1
            events.append(BreakerEvent(self.name, outcome, self._state, duration=duration))
            # Outcomes of calls admitted before the last transition only count in the totals.
            if self.config.enabled and trial.generation == self._generation:
                if trial.half_open:
                    self._half_open_running -= 1
                    self._record_half_open(outcome, events)
                elif self._state == CLOSED:
                    self._record_closed(outcome, events)
        self._notify(events)

    def _record_closed(self, outcome: str, events: list[BreakerEvent]) -> None:
        if outcome == IGNORED:
            return
        failed = outcome == FAILURE
        self._window.append(failed)
        if not failed:
            self.consecutive_failures = 0
            return
        self.consecutive_failures += 1
        cfg = self.config
        if 0 < cfg.failure_threshold <= self.consecutive_failures:
            self._transition(OPEN, f"{self.consecutive_failures} consecutive failures", events)
            return
        if cfg.failure_rate_threshold > 0 and len(self._window) >= cfg.window_size:
            rate = sum(self._window) / len(self._window)
            if rate >= cfg.failure_rate_threshold:
                self._transition(OPEN, f"failure rate {rate:.0%} over the last {len(self._window)} calls", events)

    def _record_half_open(self, outcome: str, events: list[BreakerEvent]) -> None:
        if outcome == FAILURE:
            self.consecutive_failures += 1
            self._transition(OPEN, "trial call failed", events)
        elif outcome == SUCCESS:
            self.consecutive_failures = 0
            self._half_open_successes += 1
            if self._half_open_successes >= self.config.success_threshold:
                self._transition(CLOSED, f"{self._half_open_successes} trial calls succeeded", events)

    def _maybe_half_open(self, events: list[BreakerEvent]) -> None:
        if self._state == OPEN and not self._forced and self.timer() - self._opened_at >= self.config.recovery_timeout:
            self._transition(HALF_OPEN, "recovery timeout elapsed", events)

    def _retry_after_locked(self) -> float:
        if self._state != OPEN:
            return 0.0
        if self._forced:
            return self.config.recovery_timeout
        return max(0.0, self.config.recovery_timeout - (self.timer() - self._opened_at))

    def _transition(self, to: str, reason: str, events: list[BreakerEvent]) -> None:
        before = self._state
        self._state = to
        self._generation += 1
        self._half_open_running = 0
        self._half_open_successes = 0
        if to == OPEN:
            self._opened_at = self.timer()
        if to == CLOSED:
            self._window.clear()
            self.consecutive_failures = 0
        now = self.wall_timer()
        self.last_state_change = now
        self.transitions.append({"time": now, "from": before, "to": to, "reason": reason})
        events.append(BreakerEvent(self.name, TRANSITION, to, from_state=before, reason=reason))

    def _notify(self, events: list[BreakerEvent]) -> None:
        for event in events:
            if event.kind == TRANSITION:
                level = logging.WARNING if event.state == OPEN else logging.INFO
                logger.log(level, "breaker %s: %s -> %s (%s)", self.name, event.from_state, event.state, event.reason)
            for observer in (*self.observers, *observers):
                try:
                    observer(event)
                except Exception:
                    logger.exception("breaker observer %r failed", observer)


_registry: dict[str, CircuitBreaker] = {}
_registry_lock = threading.Lock()


def get_breaker(name: str) -> CircuitBreaker:
    """The process-wide breaker for ``name``, carrying the thresholds in force now."""
    config = runtime_config.current().breaker
    with _registry_lock:
        breaker = _registry.get(name)
        if breaker is None:
            breaker = _registry[name] = CircuitBreaker(name, config)
    if breaker.config != config:
        breaker.configure(config)
    return breaker


def all_breakers() -> dict[str, CircuitBreaker]:
    with _registry_lock:
        return dict(_registry)


def clear_registry() -> None:
    """Forget every breaker (tests start from closed breakers)."""
    with _registry_lock:
        _registry.clear()
