"""The pooled HTTP session to Ollama: kept-alive connections, capped retries and a retry budget.

One ``requests.Session`` is shared by every thread of the process. A new TCP connection per call
costs a handshake and, on the server, a fresh connection handler; the pool keeps up to
``pool_maxsize`` connections open and reuses them.

Retries are bounded three ways: a count (``max_retries``), a cap on how long a server's
``Retry-After`` may make us wait (``retry_after_max``; urllib3 would otherwise wait up to 6 h), and
a budget shared by all calls (``retry_budget_ratio`` of recent requests), so that when Ollama is
struggling the retries do not multiply its load.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.util.retry import Retry

from resilience.config import PoolConfig

# POST must be listed: urllib3's default set leaves it out, and then status retries never fire.
RETRY_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"})


class PoolStats:
    """Thread-safe counters of the HTTP layer, read as a dict by ``snapshot()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total_requests = 0
        self.retries_total = 0
        self.retries_by_reason: dict[str, int] = {}
        self.budget_exhausted = 0

    def record_request(self) -> None:
        with self._lock:
            self.total_requests += 1

    def record_retry(self, reason: str) -> None:
        with self._lock:
            self.retries_total += 1
            self.retries_by_reason[reason] = self.retries_by_reason.get(reason, 0) + 1

    def record_budget_exhausted(self) -> None:
        with self._lock:
            self.budget_exhausted += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total_requests": self.total_requests,
                "retries_total": self.retries_total,
                "retries_by_reason": dict(self.retries_by_reason),
                "budget_exhausted": self.budget_exhausted,
            }


class RetryBudget:
    """Retries may add at most ``ratio`` of the requests seen in the last ``window`` seconds.

    ``min_retries`` per window are always allowed, so a quiet process can still retry a blip.
    """

    def __init__(
        self,
        ratio: float = 0.2,
        min_retries: int = 3,
        window: float = 10.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.min_retries = min_retries
        self.window = window
        self.timer = timer
        self._lock = threading.Lock()
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    @classmethod
    def from_config(cls, pool: PoolConfig, timer: Callable[[], float] = time.monotonic) -> RetryBudget:
        return cls(pool.retry_budget_ratio, pool.retry_budget_min, pool.retry_budget_window, timer)

    def record_request(self) -> None:
        with self._lock:
            now = self.timer()
            self._prune(now)
            self._requests.append(now)

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is exhausted."""
        with self._lock:
            now = self.timer()
            self._prune(now)
            if len(self._retries) >= self._allowed():
                return False
            self._retries.append(now)
            return True

    def available(self) -> int:
        with self._lock:
            self._prune(self.timer())
            return max(0, self._allowed() - len(self._retries))

    def _allowed(self) -> int:
        return max(self.min_retries, int(self.ratio * len(self._requests)))

    def _prune(self, now: float) -> None:
        horizon = now - self.window
        for times in (self._requests, self._retries):
            while times and times[0] <= horizon:
                times.popleft()


class BudgetedRetry(Retry):
    """urllib3's Retry with a shared budget, per-reason counting and no timeout retries.

    A read timeout means the server accepted the request and is still working on it: a generation
    that took longer than ``read_timeout`` will take as long again, and a repeat doubles the load
    on a server that is already slow. A connect timeout means the host is black-holed or its
    accept queue is full: each retry would add another full ``connect_timeout`` to the caller's
    wait. Quick connection errors (refused, reset, dropped keep-alive) and the listed statuses are
    retried; timeouts are not, for embed and chat alike. The breaker counts the failure instead.
    """

    def __init__(
        self,
        *args: Any,
        budget: RetryBudget | None = None,
        stats: PoolStats | None = None,
        retry_read_timeouts: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget
        self.stats = stats
        self.retry_read_timeouts = retry_read_timeouts

    def new(self, **kw: Any) -> BudgetedRetry:
        retry = super().new(**kw)
        retry.budget = self.budget
        retry.stats = self.stats
        retry.retry_read_timeouts = self.retry_read_timeouts
        return retry

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> BudgetedRetry:
        if isinstance(error, ReadTimeoutError) and not self.retry_read_timeouts:
            raise error.with_traceback(_stacktrace)
        if type(error) is ConnectTimeoutError:  # its subclass NewConnectionError is a quick refusal
            raise MaxRetryError(_pool, url, error) from error
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        if self.budget is not None and not self.budget.try_spend():
            if self.stats is not None:
                self.stats.record_budget_exhausted()
            status = getattr(response, "status", "?")
            cause = error or ResponseError(f"retry budget exhausted after HTTP {status}")
            # With raise_on_status=False urllib3 hands the last response back to the caller.
            raise MaxRetryError(_pool, url, cause) from cause
        if self.stats is not None:
            self.stats.record_retry(retry_reason(response, error))
        return retry


def retry_reason(response: Any, error: Exception | None) -> str:
    """A bounded label for why a retry happened: connect, read, status_503, other."""
    if error is None:
        return f"status_{getattr(response, 'status', 'unknown')}"
    if isinstance(error, ReadTimeoutError | ProtocolError):
        return "read"
    if isinstance(error, ConnectTimeoutError):  # NewConnectionError (refused) is a subclass
        return "connect"
    return "other"


def build_retry(pool: PoolConfig, stats: PoolStats | None, budget: RetryBudget | None) -> BudgetedRetry:
    return BudgetedRetry(
        total=pool.max_retries,
        connect=pool.max_retries,
        read=pool.max_retries,
        status=pool.max_retries,
        other=0,
        allowed_methods=RETRY_METHODS,
        status_forcelist=frozenset(pool.retry_statuses),
        backoff_factor=pool.backoff_factor,
        backoff_jitter=pool.backoff_jitter,
        backoff_max=pool.backoff_max,
        respect_retry_after_header=True,
        retry_after_max=pool.retry_after_max,  # type: ignore[arg-type]  # urllib3 annotates int
        raise_on_status=False,  # the client inspects the final response itself
        budget=budget,
        stats=stats,
    )


class PooledSession(requests.Session):
    """A Session that counts every call and never sends one without a timeout."""

    def __init__(self, pool: PoolConfig, stats: PoolStats, budget: RetryBudget) -> None:
        super().__init__()
        self.pool = pool
        self.stats = stats
        self.budget = budget

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", (self.pool.connect_timeout, self.pool.read_timeout))
        self.stats.record_request()
        self.budget.record_request()
        return super().request(method, url, *args, **kwargs)


def build_session(pool: PoolConfig, stats: PoolStats, budget: RetryBudget) -> PooledSession:
    """A session for Ollama; build one per process (and per pool config), share it across threads."""
    session = PooledSession(pool, stats, budget)
    # Ollama is an internal service: no proxies from the environment (which also costs a proxy
    # lookup on every request) and no .netrc credentials.
    session.trust_env = False
    session.headers.update({"User-Agent": "ragsite", "Accept": "application/json"})
    adapter = HTTPAdapter(
        pool_connections=pool.pool_connections,
        pool_maxsize=pool.pool_maxsize,
        pool_block=pool.pool_block,
        max_retries=build_retry(pool, stats, budget),
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# Counters of the whole process: they survive session rebuilds, so exported metrics stay monotonic.
process_stats = PoolStats()
