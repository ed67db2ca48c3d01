"""The one HTTP seam to Ollama: every embed, chat and health call goes through ``OllamaClient``.

Each call runs through the pooled session (kept-alive connections, capped retries, retry budget)
and, for embed and chat, through that operation's circuit breaker. Failures come out as
``OllamaUnavailable`` (transient: degrade and try later) or ``OllamaConfigError`` (unknown model,
bad request: fix the configuration); the client never invents a fallback value.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import requests

from resilience import config as runtime_config
from resilience.breaker import CircuitBreaker, get_breaker
from resilience.config import PoolConfig
from resilience.errors import OllamaConfigError, OllamaError, OllamaUnavailable, describe_network_error
from resilience.pool import PoolStats, RetryBudget, build_session, process_stats

logger = logging.getLogger("resilience.client")

# Called after every HTTP request with (endpoint, status, seconds); status is the HTTP code or
# "timeout" / "connection_error", seconds include retries (for a stream: until the answer starts).
# The metrics module subscribes here for a duration histogram.
RequestObserver = Callable[[str, str, float], None]
request_observers: list[RequestObserver] = []

# The guarded operations, one circuit breaker each; listed so that operators see (and can order)
# every breaker before its first call.
EMBED = "embed"
CHAT = "chat"
OPERATIONS = (EMBED, CHAT)

_MODEL_NOT_FOUND = re.compile(r"model .* not found", re.I)
MAX_DETAIL_CHARS = 120


@dataclass(frozen=True)
class ChatResult:
    content: str
    model: str
    eval_count: int | None = None
    prompt_eval_count: int | None = None
    total_duration_s: float | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def _malformed(endpoint: str, what: str) -> NoReturn:
    raise OllamaUnavailable(f"malformed response: {what}", endpoint=endpoint)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 1] + "…"


def _error_message(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return _short(response.text) or f"HTTP {response.status_code}"
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return _short(data["error"])
    return _short(response.text)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class OllamaClient:
    """A thread-safe client for one Ollama server; share one per process (``get_client()``)."""

    health_timeout: tuple[float, float] = (2.0, 5.0)

    def __init__(
        self,
        base_url: str,
        pool_config: PoolConfig | None = None,
        *,
        timer: Callable[[], float] = time.perf_counter,
        stats: PoolStats | None = None,
        breakers: Callable[[str], CircuitBreaker] = get_breaker,
        embed_batch_size: int = 64,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timer = timer
        self.stats = stats if stats is not None else process_stats
        self.breakers = breakers
        self.embed_batch_size = max(1, embed_batch_size)
        self.observers: list[RequestObserver] = []
        self._lock = threading.Lock()
        self._dims: dict[str, int] = {}  # model -> dimension of its last good answer
        self.legacy_embed = False  # set once the server turns out to predate /api/embed
        pool_config = pool_config or PoolConfig()
        # One tuple, swapped whole: a call reads config and session together, consistently.
        self._current = (pool_config, self._build(pool_config))

    def _build(self, pool_config: PoolConfig) -> requests.Session:
        return build_session(pool_config, self.stats, RetryBudget.from_config(pool_config))

    @property
    def pool_config(self) -> PoolConfig:
        return self._current[0]

    @property
    def session(self) -> requests.Session:
        return self._current[1]

    def configure(self, pool_config: PoolConfig) -> None:
        """Use a new pool configuration for new calls; calls in flight keep the old session."""
        with self._lock:
            if pool_config != self._current[0]:
                # The old session is not closed: calls in flight still use it. Its sockets close
                # when it is garbage collected.
                self._current = (pool_config, self._build(pool_config))

    # -- embeddings ------------------------------------------------------------------------------

    def embed(
        self, texts: Sequence[str], model: str, *, truncate: bool = True, keep_alive: str | None = None
    ) -> list[list[float]]:
        """One vector per text, L2-normalised, in batches of ``embed_batch_size`` per request."""
        texts = list(texts)
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.embed_batch_size):
            batch = texts[start : start + self.embed_batch_size]
            vectors.extend(self._embed_batch(batch, model, truncate, keep_alive))
        return vectors

    def _embed_batch(self, batch: list[str], model: str, truncate: bool, keep_alive: str | None) -> list[list[float]]:
        with self.breakers(EMBED).guard():
            if self.legacy_embed:
                return self._embed_legacy(batch, model)
            payload: dict[str, Any] = {"model": model, "input": batch, "truncate": truncate}
            if keep_alive is not None:
                payload["keep_alive"] = keep_alive
            response = self._request("POST", "/api/embed", payload)
            if response.status_code == 404 and not _MODEL_NOT_FOUND.search(_error_message(response)):
                logger.warning(
                    "%s has no /api/embed (Ollama before 0.3.4?): falling back to /api/embeddings",
                    self.base_url,
                )
                self.legacy_embed = True
                return self._embed_legacy(batch, model)
            data = self._json(response, "/api/embed")
            return self._check_vectors(data.get("embeddings"), len(batch), model, "/api/embed")

    def _embed_legacy(self, batch: list[str], model: str) -> list[list[float]]:
        """The pre-0.3.4 endpoint: one text per request, vectors not normalised."""
        vectors = []
        for text in batch:
            response = self._request("POST", "/api/embeddings", {"model": model, "prompt": text})
            data = self._json(response, "/api/embeddings")
            vector = data.get("embedding")
            if isinstance(vector, list) and vector and all(type(x) in (int, float) for x in vector):
                norm = math.sqrt(sum(x * x for x in vector))
                if norm > 0:
                    vector = [x / norm for x in vector]
            vectors.append(vector)
        return self._check_vectors(vectors, len(batch), model, "/api/embeddings")

    def _check_vectors(self, vectors: Any, expected: int, model: str, endpoint: str) -> list[list[float]]:
        if not isinstance(vectors, list):
            _malformed(endpoint, "no list of embeddings")
        if len(vectors) != expected:
            _malformed(endpoint, f"{len(vectors)} vectors for {expected} inputs")
        dims = set()
        for vector in vectors:
            if not isinstance(vector, list) or not vector:
                _malformed(endpoint, "an embedding is not a non-empty list")
            if not all((type(x) is float or type(x) is int) and math.isfinite(x) for x in vector):
                _malformed(endpoint, "an embedding holds something other than finite numbers")
            dims.add(len(vector))
        if len(dims) > 1:
            _malformed(endpoint, f"embeddings of different dimensions {sorted(dims)}")
        if dims:
            dim = dims.pop()
            known = self._dims.setdefault(model, dim)
            if dim != known:
                _malformed(endpoint, f"dimension {dim}, expected {known} for {model}")
        return vectors

    # -- chat ------------------------------------------------------------------------------------

    def chat(
        self,
        messages: list[dict[str, Any]],
        model: str,
        *,
        options: dict[str, Any] | None = None,
        keep_alive: str | None = None,
    ) -> ChatResult:
        payload = self._chat_payload(messages, model, options, keep_alive, stream=False)
        with self.breakers(CHAT).guard():
            data = self._json(self._request("POST", "/api/chat", payload), "/api/chat")
            message = data.get("message")
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str):
                _malformed("/api/chat", "no message.content string")
            duration = data.get("total_duration")
            return ChatResult(
                content=content,
                model=str(data.get("model") or model),
                eval_count=_int_or_none(data.get("eval_count")),
                prompt_eval_count=_int_or_none(data.get("prompt_eval_count")),
                total_duration_s=duration / 1e9 if _int_or_none(duration) is not None else None,
                raw=data,
            )

    def chat_stream(
        self,
        messages: list[dict[str, Any]],
        model: str,
        *,
        options: dict[str, Any] | None = None,
        keep_alive: str | None = None,
    ) -> Iterator[str]:
        """Yield the answer's content pieces as Ollama streams them.

        Nothing is sent until the first ``next()``. Connection errors and retryable statuses are
        retried before the answer starts; once pieces flow, a failure (including an ``{"error"}``
        line after the 200) raises OllamaUnavailable and is never retried. The breaker records
        the outcome when the stream ends; a consumer that stops early counts as neither.
        """
        payload = self._chat_payload(messages, model, options, keep_alive, stream=True)
        endpoint = "/api/chat"
        with self.breakers(CHAT).guard():
            response = self._request("POST", endpoint, payload, stream=True)
            try:
                self._check_status(response, endpoint)
                lines = response.iter_lines()
                while True:
                    try:
                        line = next(lines, None)
                    except requests.RequestException as exc:
                        raise OllamaUnavailable(describe_network_error(exc), endpoint=endpoint) from exc
                    if line is None:
                        _malformed(endpoint, "stream ended before done")
                    if not line.strip():
                        continue
                    try:
                        data = json.loads(line)
                    except ValueError:
                        _malformed(endpoint, "a stream line is not JSON")
                    if not isinstance(data, dict):
                        _malformed(endpoint, "a stream line is not a JSON object")
                    if "error" in data:
                        detail = _short(str(data["error"]))
                        logger.warning("Ollama stream from %s failed: %s", self.base_url, detail)
                        raise OllamaUnavailable("stream error", endpoint=endpoint, status=200, detail=detail)
                    message = data.get("message")
                    piece = message.get("content", "") if isinstance(message, dict) else None
                    if not isinstance(piece, str):
                        _malformed(endpoint, "a stream line has no message.content string")
                    if piece:
                        yield piece
                    if data.get("done"):
                        return
            finally:
                response.close()

    @staticmethod
    def _chat_payload(
        messages: list[dict[str, Any]],
        model: str,
        options: dict[str, Any] | None,
        keep_alive: str | None,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
        if options:
            payload["options"] = options
        if keep_alive is not None:
            payload["keep_alive"] = keep_alive
        return payload

    # -- health (no breaker: a health check must see the server, not the breaker) --------------

    def version(self) -> str:
        data = self._json(self._request("GET", "/api/version", timeout=self._health_timeout()), "/api/version")
        version = data.get("version")
        if not isinstance(version, str):
            _malformed("/api/version", "no version string")
        return version

    def tags(self) -> list[dict[str, Any]]:
        """The models the server has pulled."""
        data = self._json(self._request("GET", "/api/tags", timeout=self._health_timeout()), "/api/tags")
        models = data.get("models")
        if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
            _malformed("/api/tags", "no list of models")
        return models

    def _health_timeout(self) -> tuple[float, float]:
        pool = self.pool_config
        return (
            min(pool.connect_timeout, self.health_timeout[0]),
            min(pool.read_timeout, self.health_timeout[1]),
        )

    # -- HTTP ------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        endpoint: str,
        payload: dict[str, Any] | None = None,
        *,
        stream: bool = False,
        timeout: tuple[float, float] | None = None,
    ) -> requests.Response:
        pool, session = self._current
        label = "connection_error"
        started = self.timer()
        try:
            response = session.request(
                method,
                self.base_url + endpoint,
                json=payload,
                timeout=timeout or (pool.connect_timeout, pool.read_timeout),
                stream=stream,
            )
            label = str(response.status_code)
            return response
        except requests.RequestException as exc:
            reason = describe_network_error(exc)
            if reason == "timeout":
                label = "timeout"
            raise OllamaUnavailable(reason, endpoint=endpoint, detail=_short(str(exc))) from exc
        finally:
            self._observe(endpoint, label, self.timer() - started)

    def _observe(self, endpoint: str, status: str, seconds: float) -> None:
        for observer in (*self.observers, *request_observers):
            try:
                observer(endpoint, status, seconds)
            except Exception:
                logger.exception("request observer %r failed", observer)

    def _check_status(self, response: requests.Response, endpoint: str) -> None:
        status = response.status_code
        if status < 400:
            return
        message = _error_message(response)
        response.close()
        if status == 429 or status >= 500:
            raise OllamaUnavailable(
                f"HTTP {status}",
                endpoint=endpoint,
                status=status,
                detail=message,
                retry_after=_retry_after(response),
            )
        # The body is the upstream's own words and may name hosts, paths or tokens: it goes to the
        # log and stays on the exception for operators; the public reason names the status only.
        logger.warning("Ollama refused %s %s: HTTP %s: %s", self.base_url, endpoint, status, message)
        reason = f"upstream error {status}"
        if _MODEL_NOT_FOUND.search(message):
            reason += ": model not found"
        raise OllamaConfigError(reason, endpoint=endpoint, status=status, detail=message)

    def _json(self, response: requests.Response, endpoint: str) -> dict[str, Any]:
        self._check_status(response, endpoint)
        try:
            data = response.json()
        except ValueError:
            _malformed(endpoint, "invalid JSON")
        if not isinstance(data, dict):
            _malformed(endpoint, "not a JSON object")
        if "error" in data:
            detail = _short(str(data["error"]))
            logger.warning("Ollama answered %s %s with an error: %s", self.base_url, endpoint, detail)
            raise OllamaUnavailable("upstream error", endpoint=endpoint, detail=detail)
        return data


_client: OllamaClient | None = None
_client_lock = threading.Lock()


def get_client() -> OllamaClient:
    """The process's shared client for the configuration in force now.

    A new base URL builds a new client; a new pool configuration swaps the session of the
    existing one. Either way, calls already in flight finish on what they started with.
    """
    global _client
    cfg = runtime_config.current()
    with _client_lock:
        client = _client
        if client is None or client.base_url != cfg.provider.ollama_base_url.rstrip("/"):
            client = _client = OllamaClient(
                cfg.provider.ollama_base_url,
                cfg.pool,
                stats=process_stats,
                embed_batch_size=cfg.provider.embedding_batch_size,
            )
    client.embed_batch_size = max(1, cfg.provider.embedding_batch_size)
    client.configure(cfg.pool)
    return client


def reset_client() -> None:
    """Forget the shared client (tests, or after changing the environment)."""
    global _client
    with _client_lock:
        _client = None


__all__ = [
    "ChatResult",
    "OllamaClient",
    "OllamaConfigError",
    "OllamaError",
    "OllamaUnavailable",
    "get_client",
    "request_observers",
    "reset_client",
]
