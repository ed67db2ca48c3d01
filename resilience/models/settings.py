"""The settings rows: one per config section, edited in the admin and applied live by every
process (resilience.live). The environment only seeds them when the database is created.

This module holds the rows of the calls to Ollama (provider, breaker, pool);
resilience.models.service_settings those of the service around them (cache, access, jobs)."""

from __future__ import annotations

from typing import Any

from django.db import models

from resilience.config import (
    KEEP_ALIVE_MAX,
    LOCAL_EMBEDDING_MODEL,
    BreakerConfig,
    PoolConfig,
    ProviderConfig,
    duration_seconds,
    keep_alive_problem,
)
from resilience.models.base import (
    AT_LEAST_ONE,
    AT_LEAST_ZERO,
    FRACTION,
    POSITIVE,
    RATIO,
    SettingsRow,
    at_most,
    help_text,
    url_problem,
)
from resilience.models.service_settings import AccessSettings, CacheSettings, JobSettings


class ProviderSettings(SettingsRow):
    ollama_base_url = models.CharField(
        "Ollama base URL",
        max_length=500,
        default=ProviderConfig.ollama_base_url,
        help_text=help_text(
            ProviderConfig, "ollama_base_url", "Where the Ollama server listens (used by the ollama backends)."
        ),
    )
    embedding_backend = models.CharField(
        max_length=16,
        choices=[("local", "local (all-MiniLM-L6-v2 on the CPU)"), ("ollama", "ollama")],
        default=ProviderConfig.embedding_backend,
        help_text=help_text(
            ProviderConfig, "embedding_backend", "What embeds chunks and questions. Changing it means re-embedding."
        ),
    )
    embedding_model = models.CharField(
        max_length=200,
        blank=True,
        default=ProviderConfig.embedding_model,
        help_text=help_text(
            ProviderConfig,
            "embedding_model",
            "Embedding model name: required for ollama (e.g. all-minilm); for local, empty or "
            "all-MiniLM-L6-v2 (the one model it ships). Changing it means re-embedding.",
        ),
    )
    embedding_batch_size = models.IntegerField(
        default=ProviderConfig.embedding_batch_size,
        validators=at_most(ProviderConfig, "embedding_batch_size"),
        help_text=help_text(ProviderConfig, "embedding_batch_size", "Texts embedded per batch."),
    )
    generation_backend = models.CharField(
        max_length=16,
        choices=[("extractive", "extractive (sentences of the sources)"), ("ollama", "ollama")],
        default=ProviderConfig.generation_backend,
        help_text=help_text(ProviderConfig, "generation_backend", "What writes the answers."),
    )
    generation_model = models.CharField(
        max_length=200,
        blank=True,
        default=ProviderConfig.generation_model,
        help_text=help_text(
            ProviderConfig, "generation_model", "Ollama chat model; required when generation is ollama."
        ),
    )
    keep_alive = models.CharField(
        max_length=32,
        default=ProviderConfig.keep_alive,
        help_text=help_text(
            ProviderConfig,
            "keep_alive",
            "How long Ollama keeps the model loaded after a request (5m, 1h, 0, -1 = forever), at most "
            f"{KEEP_ALIVE_MAX}.",
        ),
    )
    num_ctx = models.IntegerField(
        "context window (num_ctx)",
        default=ProviderConfig.num_ctx,
        validators=at_most(ProviderConfig, "num_ctx"),
        help_text=help_text(
            ProviderConfig, "num_ctx", "Tokens of context asked of Ollama; it silently truncates beyond it."
        ),
    )

    config_class = ProviderConfig
    section = "provider"
    rules = {"embedding_batch_size": AT_LEAST_ONE, "num_ctx": AT_LEAST_ONE}

    class Meta(SettingsRow.Meta):
        verbose_name = verbose_name_plural = "Ollama and providers"

    def other_errors(self) -> dict[str, str]:
        errors: dict[str, str] = {}
        problem = url_problem(self.ollama_base_url or "")
        if problem:
            errors["ollama_base_url"] = problem
        if self.embedding_backend == "ollama" and not self.embedding_model.strip():
            errors["embedding_model"] = "Name the Ollama embedding model (e.g. all-minilm)."
        if self.embedding_backend == "local" and self.embedding_model not in ("", LOCAL_EMBEDDING_MODEL):
            errors["embedding_model"] = (
                f"The local backend only has {LOCAL_EMBEDDING_MODEL}: leave it empty or use Ollama."
            )
        if self.generation_backend == "ollama" and not self.generation_model.strip():
            errors["generation_model"] = "Name the Ollama chat model (e.g. llama3.2)."
        problem = keep_alive_problem(self.keep_alive or "")
        if problem:
            errors["keep_alive"] = problem
        return errors

    def config_values(self) -> dict[str, Any]:
        values = super().config_values()
        if keep_alive_problem(values["keep_alive"]):  # stored before the limit, or in SQL
            safe = KEEP_ALIVE_MAX if duration_seconds(values["keep_alive"]) is not None else ProviderConfig.keep_alive
            values["keep_alive"] = safe
        return values

    @classmethod
    def values_from(cls, section: Any) -> dict[str, Any]:
        values = super().values_from(section)
        if section.embedding_backend == "ollama":  # an ollama row always names its model
            values["embedding_model"] = section.resolved_embedding_model
        return values


class BreakerSettings(SettingsRow):
    enabled = models.BooleanField(
        default=BreakerConfig.enabled,
        help_text=help_text(BreakerConfig, "enabled", "Off: every call goes to Ollama, whatever its failures."),
    )
    failure_threshold = models.IntegerField(
        default=BreakerConfig.failure_threshold,
        validators=at_most(BreakerConfig, "failure_threshold"),
        help_text=help_text(BreakerConfig, "failure_threshold", "Consecutive failures that open the breaker."),
    )
    failure_rate_threshold = models.FloatField(
        default=BreakerConfig.failure_rate_threshold,
        help_text=help_text(
            BreakerConfig,
            "failure_rate_threshold",
            "Share of failed calls in the window that opens the breaker (0.5 = half).",
        ),
    )
    window_size = models.IntegerField(
        default=BreakerConfig.window_size,
        validators=at_most(BreakerConfig, "window_size"),
        help_text=help_text(BreakerConfig, "window_size", "Recent calls the failure rate is computed over."),
    )
    recovery_timeout = models.FloatField(
        "recovery timeout (s)",
        default=BreakerConfig.recovery_timeout,
        validators=at_most(BreakerConfig, "recovery_timeout"),
        help_text=help_text(
            BreakerConfig, "recovery_timeout", "Seconds an open breaker waits before letting trial calls through."
        ),
    )
    half_open_max_calls = models.IntegerField(
        default=BreakerConfig.half_open_max_calls,
        validators=at_most(BreakerConfig, "half_open_max_calls"),
        help_text=help_text(
            BreakerConfig, "half_open_max_calls", "Trial calls allowed at the same time while half-open."
        ),
    )
    success_threshold = models.IntegerField(
        default=BreakerConfig.success_threshold,
        validators=at_most(BreakerConfig, "success_threshold"),
        help_text=help_text(BreakerConfig, "success_threshold", "Successful trial calls that close the breaker again."),
    )
    slow_call_seconds = models.FloatField(
        "slow call (s)",
        default=BreakerConfig.slow_call_seconds,
        validators=at_most(BreakerConfig, "slow_call_seconds"),
        help_text=help_text(
            BreakerConfig, "slow_call_seconds", "A call slower than this counts as a failure; 0 turns this off."
        ),
    )

    config_class = BreakerConfig
    section = "breaker"
    rules = {
        "failure_threshold": AT_LEAST_ONE,
        "failure_rate_threshold": FRACTION,
        "window_size": AT_LEAST_ONE,
        "recovery_timeout": POSITIVE,
        "half_open_max_calls": AT_LEAST_ONE,
        "success_threshold": AT_LEAST_ONE,
        "slow_call_seconds": AT_LEAST_ZERO,
    }

    class Meta(SettingsRow.Meta):
        verbose_name = verbose_name_plural = "Circuit breaker"


class PoolSettings(SettingsRow):
    pool_connections = models.IntegerField(
        default=PoolConfig.pool_connections,
        validators=at_most(PoolConfig, "pool_connections"),
        help_text=help_text(
            PoolConfig, "pool_connections", "Hosts whose connections are kept (one per Ollama server)."
        ),
    )
    pool_maxsize = models.IntegerField(
        default=PoolConfig.pool_maxsize,
        validators=at_most(PoolConfig, "pool_maxsize"),
        help_text=help_text(PoolConfig, "pool_maxsize", "Connections kept open to Ollama per worker process."),
    )
    pool_block = models.BooleanField(
        default=PoolConfig.pool_block,
        help_text=help_text(
            PoolConfig, "pool_block", "On: a call waits for a free connection; off: it opens an extra one."
        ),
    )
    connect_timeout = models.FloatField(
        "connect timeout (s)",
        default=PoolConfig.connect_timeout,
        validators=at_most(PoolConfig, "connect_timeout"),
        help_text=help_text(PoolConfig, "connect_timeout", "Seconds to wait for a connection."),
    )
    read_timeout = models.FloatField(
        "read timeout (s)",
        default=PoolConfig.read_timeout,
        validators=at_most(PoolConfig, "read_timeout"),
        help_text=help_text(
            PoolConfig, "read_timeout", "Seconds to wait for Ollama's answer to start (or between stream pieces)."
        ),
    )
    max_retries = models.IntegerField(
        default=PoolConfig.max_retries,
        validators=at_most(PoolConfig, "max_retries"),
        help_text=help_text(
            PoolConfig, "max_retries", "Retries of a refused connection or a listed status; 0 turns retries off."
        ),
    )
    backoff_factor = models.FloatField(
        default=PoolConfig.backoff_factor,
        validators=at_most(PoolConfig, "backoff_factor"),
        help_text=help_text(PoolConfig, "backoff_factor", "Seconds before the first retry, doubling each time."),
    )
    backoff_jitter = models.FloatField(
        default=PoolConfig.backoff_jitter,
        validators=at_most(PoolConfig, "backoff_jitter"),
        help_text=help_text(PoolConfig, "backoff_jitter", "Random seconds added to each backoff."),
    )
    backoff_max = models.FloatField(
        default=PoolConfig.backoff_max,
        validators=at_most(PoolConfig, "backoff_max"),
        help_text=help_text(PoolConfig, "backoff_max", "Longest wait between retries, in seconds."),
    )
    retry_statuses = models.CharField(
        max_length=200,
        blank=True,
        default=",".join(str(s) for s in PoolConfig.retry_statuses),
        help_text=help_text(
            PoolConfig, "retry_statuses", "HTTP statuses that are retried, comma-separated; empty: none."
        ),
    )
    retry_after_max = models.FloatField(
        default=PoolConfig.retry_after_max,
        validators=at_most(PoolConfig, "retry_after_max"),
        help_text=help_text(
            PoolConfig, "retry_after_max", "Longest Retry-After (seconds) a server may make a retry wait."
        ),
    )
    retry_budget_ratio = models.FloatField(
        default=PoolConfig.retry_budget_ratio,
        help_text=help_text(
            PoolConfig, "retry_budget_ratio", "Retries may add at most this share of recent requests (0.2 = 20%)."
        ),
    )
    retry_budget_min = models.IntegerField(
        default=PoolConfig.retry_budget_min,
        validators=at_most(PoolConfig, "retry_budget_min"),
        help_text=help_text(PoolConfig, "retry_budget_min", "Retries always allowed per budget window."),
    )
    retry_budget_window = models.FloatField(
        default=PoolConfig.retry_budget_window,
        validators=at_most(PoolConfig, "retry_budget_window"),
        help_text=help_text(PoolConfig, "retry_budget_window", "Seconds of history the retry budget counts."),
    )

    config_class = PoolConfig
    section = "pool"
    rules = {
        "pool_connections": AT_LEAST_ONE,
        "pool_maxsize": AT_LEAST_ONE,
        "connect_timeout": POSITIVE,
        "read_timeout": POSITIVE,
        "max_retries": AT_LEAST_ZERO,
        "backoff_factor": AT_LEAST_ZERO,
        "backoff_jitter": AT_LEAST_ZERO,
        "backoff_max": POSITIVE,
        "retry_after_max": POSITIVE,
        "retry_budget_ratio": RATIO,
        "retry_budget_min": AT_LEAST_ZERO,
        "retry_budget_window": POSITIVE,
    }

    class Meta(SettingsRow.Meta):
        verbose_name = verbose_name_plural = "Connection pool"

    def status_codes(self) -> tuple[int, ...] | None:
        """The retry statuses as numbers, or None when the text is not a list of 4xx/5xx codes."""
        try:
            codes = tuple(int(part) for part in (self.retry_statuses or "").split(",") if part.strip())
        except ValueError:
            return None
        return codes if all(400 <= code <= 599 for code in codes) else None

    def other_errors(self) -> dict[str, str]:
        if self.status_codes() is None:
            return {"retry_statuses": "List HTTP statuses from 400 to 599 separated by commas, like 429,502,503,504."}
        return {}

    def to_config(self) -> PoolConfig:
        values = self.config_values()
        values["retry_statuses"] = self.status_codes() or ()
        return PoolConfig(**values)

    @classmethod
    def values_from(cls, section: Any) -> dict[str, Any]:
        values = super().values_from(section)
        values["retry_statuses"] = ",".join(str(code) for code in section.retry_statuses)
        return values


# The order RuntimeConfig lists them; resilience.live reads their versions in one query.
SETTINGS_MODELS: tuple[type[SettingsRow], ...] = (
    ProviderSettings,
    BreakerSettings,
    PoolSettings,
    CacheSettings,
    AccessSettings,
    JobSettings,
)
