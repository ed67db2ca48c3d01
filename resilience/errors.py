"""Exceptions raised by the Ollama client.

Every failure carries a short public ``reason`` ("timeout", "HTTP 503", "upstream error 403",
"circuit open") that the API shows to anyone as ``degraded_reason``, so it never holds text from
the upstream; what the upstream said (its error body, the URL of a failed connection) is the
private ``detail``, for logs and operators. Callers decide how to degrade from the exception class
and never have to parse messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError


class OllamaError(Exception):
    """Base class: Ollama could not give a usable answer."""

    def __init__(
        self,
        reason: str,
        *,
        endpoint: str = "",
        status: int | None = None,
        detail: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.reason = reason
        self.endpoint = endpoint
        self.status = status
        self.detail = detail
        # Seconds the server (Retry-After) or the breaker asked us to wait, when known.
        self.retry_after = retry_after
        message = f"{endpoint}: {reason}" if endpoint else reason
        if detail and detail != reason:
            message = f"{message} ({detail})"
        super().__init__(message)


class OllamaUnavailable(OllamaError):
    """A transient failure (network, timeout, 5xx, 429, malformed answer): worth retrying later.

    These count as failures for the circuit breaker.
    """


class CircuitOpenError(OllamaUnavailable):
    """The breaker rejected the call without touching the network."""

    def __init__(self, breaker: str, retry_after: float) -> None:
        self.breaker = breaker
        super().__init__(
            "circuit open",
            detail=f"breaker {breaker!r}, next trial in {retry_after:.1f}s",
            retry_after=retry_after,
        )


class OllamaConfigError(OllamaError):
    """Ollama refused the request itself (unknown model, bad request): retrying cannot help.

    Not a breaker failure: a typo in a model name must not open the circuit for everyone.
    """


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (requests → urllib3 → socket errors)."""
    stack: list[Any] = [exc]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend((current.__cause__, current.__context__, getattr(current, "reason", None)))
        stack.extend(current.args)


def describe_network_error(exc: BaseException) -> str:
    """A short reason for a requests exception: connection refused, timeout, connection reset..."""
    causes = list(_causes(exc))
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "connection refused"
    if isinstance(exc, requests.Timeout) or any(
        isinstance(c, ReadTimeoutError | TimeoutError)
        or (isinstance(c, ConnectTimeoutError) and not isinstance(c, NewConnectionError))
        for c in causes
    ):
        return "timeout"
    if any(isinstance(c, ConnectionResetError) for c in causes):
        return "connection reset"
    return "connection error"
