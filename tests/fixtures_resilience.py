"""Fixtures for the resilience tests (breaker, pool, client).

Timeouts and backoffs are tiny so fault tests finish in milliseconds; breaker timing uses a fake
clock so nothing sleeps for a recovery timeout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resilience import config as runtime_config
from resilience.breaker import CircuitBreaker, clear_registry
from resilience.client import OllamaClient, reset_client
from resilience.config import BreakerConfig, PoolConfig, RuntimeConfig
from resilience.fake_ollama import FakeOllama
from resilience.pool import PoolStats

EMBED_MODEL = "all-minilm"
CHAT_MODEL = "llama3.2"

FAST_POOL: dict[str, Any] = {
    "connect_timeout": 0.5,
    "read_timeout": 1.0,
    "max_retries": 2,
    "backoff_factor": 0.0,
    "backoff_jitter": 0.0,
    "backoff_max": 0.05,
    "retry_after_max": 0.2,
    "retry_budget_min": 1000,  # tests of the budget lower it themselves
}
FAST_BREAKER: dict[str, Any] = {"failure_threshold": 3, "recovery_timeout": 60.0}


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def resilience_config() -> Iterator[Callable[..., RuntimeConfig]]:
    """Fast settings in force for the test; call it to change sections: ``configure(pool={...})``."""
    runtime_config.override(runtime_config.replace(RuntimeConfig(), pool=FAST_POOL, breaker=FAST_BREAKER))
    clear_registry()
    reset_client()

    def configure(**sections: dict[str, Any]) -> RuntimeConfig:
        updated = runtime_config.replace(runtime_config.current(), **sections)
        runtime_config.override(updated)
        return updated

    yield configure
    runtime_config.override(None)
    clear_registry()
    reset_client()


@pytest.fixture
def fast_pool(resilience_config: Callable[..., RuntimeConfig]) -> PoolConfig:
    return runtime_config.current().pool


@pytest.fixture
def breakers(clock: FakeClock, resilience_config: Callable[..., RuntimeConfig]) -> dict[str, CircuitBreaker]:
    """The client's breakers, on the fake clock, with the fast breaker settings."""
    cfg = runtime_config.current().breaker
    return {name: CircuitBreaker(name, cfg, timer=clock) for name in ("embed", "chat")}


@pytest.fixture
def ollama(fake_ollama: FakeOllama, fast_pool: PoolConfig, breakers: dict[str, CircuitBreaker]) -> OllamaClient:
    """A client for the fake server with its own counters and fake-clock breakers."""
    return OllamaClient(fake_ollama.url, fast_pool, stats=PoolStats(), breakers=breakers.__getitem__)


def make_client(
    url: str, pool: PoolConfig, breakers: dict[str, CircuitBreaker] | None = None, **pool_changes: Any
) -> OllamaClient:
    """A client with its own stats (and breakers, if given) and some pool settings changed."""
    pool = dataclasses.replace(pool, **pool_changes)
    kwargs: dict[str, Any] = {"stats": PoolStats()}
    if breakers is not None:
        kwargs["breakers"] = breakers.__getitem__
    return OllamaClient(url, pool, **kwargs)


def breaker_config(**changes: Any) -> BreakerConfig:
    return BreakerConfig(**{**FAST_BREAKER, **changes})
