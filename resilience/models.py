"""Rows the resilience layer keeps in Postgres, so every worker and instance shares them."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from django.contrib.postgres.indexes import OpClass
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Count, Q
from django.db.models.functions import Cast
from pgvector.django import HnswIndex, VectorField

from rag.models import DEFAULT_DIMENSIONS, DEFAULT_MODEL
from resilience.config import (
    LOCAL_EMBEDDING_MODEL,
    AccessConfig,
    BreakerConfig,
    CacheConfig,
    PoolConfig,
    ProviderConfig,
    section_from_env,
)

# SEMANTIC CACHE

# HNSW build parameters of the cached questions' indexes. With pgvector's defaults (16, 64) a
# question repeating one cached entry among many close paraphrases was missed by the index 13 %
# of the time at 100k entries (ef_search 100); with (24, 128), 1.5 %, at the same query latency
# (bench/cache.py). Only inserting, on the miss path that pays a model call anyway, gets slower.
ANSWER_HNSW_M = 24
ANSWER_HNSW_EF_CONSTRUCTION = 128


class CachedAnswer(models.Model):
    """One answer to a question, valid only within its scope.

    The scope is every input that changes the answer: the collection and its corpus version,
    the embedding model (questions are only compared with vectors of the same model), the
    generation backend and model, the prompt version, and k (how many sources it cites).
    """

    collection = models.ForeignKey("rag.Collection", on_delete=models.CASCADE, related_name="+")
    corpus_version = models.PositiveBigIntegerField()
    embedding_model = models.CharField(max_length=200)
    generation = models.CharField(max_length=200, help_text="'extractive' or 'ollama/<model>'.")
    prompt_version = models.CharField(max_length=32)
    k = models.PositiveSmallIntegerField()
    question_hash = models.CharField(max_length=64, help_text="SHA-256 of the normalised question.")
    question = models.TextField()
    # Untyped like rag's chunks: each embedding model gets its own partial HNSW index over
    # ``embedding::vector(N)`` (resilience.cache.ensure_answer_index).
    embedding = VectorField()
    answer = models.TextField()
    sources = models.JSONField(default=list, help_text="The sources as the API returns them.")
    generator = models.CharField(max_length=200)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            # One entry per question and scope; also the index of exact lookups and of scope
            # scans (its leading columns are the scope).
            models.UniqueConstraint(
                fields=[
                    "collection",
                    "corpus_version",
                    "embedding_model",
                    "generation",
                    "prompt_version",
                    "k",
                    "question_hash",
                ],
                name="cachedanswer_unique_question",
            ),
        ]
        indexes = [
            models.Index(fields=["created_at"], name="cachedanswer_created"),
            HnswIndex(
                OpClass(
                    Cast("embedding", output_field=VectorField(dimensions=DEFAULT_DIMENSIONS)),
                    name="vector_cosine_ops",
                ),
                name="cachedanswer_minilm_hnsw",
                condition=Q(embedding_model=DEFAULT_MODEL),
                m=ANSWER_HNSW_M,
                ef_construction=ANSWER_HNSW_EF_CONSTRUCTION,
            ),
        ]

    def __str__(self) -> str:
        return self.question[:80]

    def is_fresh(self, now: datetime, ttl_seconds: int) -> bool:
        """Servable as a normal hit: younger than the TTL (hits never extend it)."""
        return now < self.created_at + timedelta(seconds=ttl_seconds)

    @property
    def hits(self) -> int:
        """Times served from the cache (kept in CachedAnswerUsage; select_related("usage") for lists)."""
        try:
            return self.usage.hits
        except CachedAnswerUsage.DoesNotExist:
            return 0

    @property
    def last_hit_at(self) -> datetime | None:
        try:
            return self.usage.last_hit_at
        except CachedAnswerUsage.DoesNotExist:
            return None


class CachedAnswerUsage(models.Model):
    """How often and how lately an entry was served: the LRU order.

    Kept apart from the entry so that a hit writes one small row. An update of the entry itself is
    a HOT update only while its page has room, and otherwise inserts it into the HNSW index again
    (measured at 100k entries: 4 ms a hit, against 0.5 ms for the index scan itself).
    """

    # No database constraint: the cache deletes entries and their usage in one statement, and a
    # hit racing an eviction must not fail the lookup (resilience.cache.purge drops orphans).
    entry = models.OneToOneField(
        CachedAnswer, on_delete=models.CASCADE, primary_key=True, related_name="usage", db_constraint=False
    )
    hits = models.PositiveIntegerField(default=0)
    last_hit_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.entry_id}: {self.hits} hits"


class CachedEmbedding(models.Model):
    """A text's vector under one embedding model, so no text is embedded twice."""

    model = models.CharField(max_length=200)
    text_hash = models.CharField(max_length=64, help_text="SHA-256 of the whitespace-normalised text.")
    embedding = VectorField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "text_hash"], name="cachedembedding_unique_text"),
        ]

    def __str__(self) -> str:
        return f"{self.model}:{self.text_hash[:12]}"


class CacheCounter(models.Model):
    """A named event count (hits, misses, evictions...), shared by every worker process."""

    name = models.CharField(max_length=64, primary_key=True)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


# SETTINGS
# One row each, edited in the admin and applied live by every process (resilience.live). The
# environment only seeds them when the database is created (migration 0002).


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else "empty"


def _help(cls: type, name: str, text: str) -> str:
    """Help text ending with the documented default, read from the config dataclass."""
    return f"{text} Default: {_shown(getattr(cls, name))}."


Rule = tuple[Callable[[Any], bool], str]
AT_LEAST_ONE: Rule = (lambda v: v >= 1, "Must be at least 1.")
AT_LEAST_ZERO: Rule = (lambda v: v >= 0, "Must be 0 or more.")
POSITIVE: Rule = (lambda v: v > 0, "Must be greater than 0.")
FRACTION: Rule = (lambda v: 0 < v <= 1, "Must be greater than 0 and at most 1.")
RATIO: Rule = (lambda v: 0 <= v <= 1, "Must be between 0 and 1.")

_DURATION = re.compile(r"^(-1|0|\d+|(\d+(\.\d+)?(ms|s|m|h))+)$")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be Ollama's base URL, or None.

    Django's URLValidator would refuse a bare host name such as ``http://ollama:11434`` (a
    Compose service), which is exactly what deployments use.
    """
    if not url or any(ch.isspace() for ch in url):
        return "Enter a URL without spaces, like http://127.0.0.1:11434."
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "The URL must start with http:// or https://."
    try:
        port = parts.port
    except ValueError:
        return "The port must be a number between 0 and 65535."
    if not parts.hostname or port == 0 or parts.query or parts.fragment or parts.username:
        return "Enter a well-formed URL with a host and no query, fragment or credentials."
    return None


class SettingsRow(models.Model):
    """A singleton (always id 1) holding one config section; ``to_config()`` gives the dataclass."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    config_class: ClassVar[type]
    section: ClassVar[str]  # the RuntimeConfig attribute it fills
    rules: ClassVar[dict[str, Rule]] = {}

    class Meta:
        abstract = True
        constraints = [models.CheckConstraint(condition=Q(id=1), name="%(app_label)s_%(class)s_singleton")]

    def __str__(self) -> str:
        return str(self._meta.verbose_name)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        for name, (valid, message) in self.rules.items():
            value = getattr(self, name)
            if value is not None and not valid(value):
                errors[name] = message
        errors.update(self.other_errors())
        if errors:
            raise ValidationError(errors)

    def other_errors(self) -> dict[str, str]:
        """Errors the per-field rules cannot express."""
        return {}

    def to_config(self) -> Any:
        return self.config_class(**{f.name: getattr(self, f.name) for f in fields(self.config_class)})

    @classmethod
    def values_from(cls, section: Any) -> dict[str, Any]:
        """Field values for a config section (the environment's, when seeding a database)."""
        return {f.name: getattr(section, f.name) for f in fields(section)}

    @classmethod
    def load(cls, *, version: str | None = None) -> Self:
        """The row, created from the environment if missing, cached per process.

        The cached copy is reused while ``version`` (a digest of the row that resilience.live
        reads for all sections in one query) is the one it was loaded at: an unchanged row costs
        nothing.
        """
        cached = _loaded.get(cls)
        if cached is not None and version is not None and cached[0] == version:
            return cached[1]  # type: ignore[return-value]
        row, _ = cls.objects.get_or_create(pk=1, defaults=cls.values_from(section_from_env(cls.config_class)))
        _loaded[cls] = (version, row)
        return row


_loaded: dict[type[SettingsRow], tuple[str | None, SettingsRow]] = {}


class ProviderSettings(SettingsRow):
    ollama_base_url = models.CharField(
        "Ollama base URL",
        max_length=500,
        default=ProviderConfig.ollama_base_url,
        help_text=_help(
            ProviderConfig, "ollama_base_url", "Where the Ollama server listens (used by the ollama backends)."
        ),
    )
    embedding_backend = models.CharField(
        max_length=16,
        choices=[("local", "local (all-MiniLM-L6-v2 on the CPU)"), ("ollama", "ollama")],
        default=ProviderConfig.embedding_backend,
        help_text=_help(
            ProviderConfig, "embedding_backend", "What embeds chunks and questions. Changing it means re-embedding."
        ),
    )
    embedding_model = models.CharField(
        max_length=200,
        blank=True,
        default=ProviderConfig.embedding_model,
        help_text=_help(
            ProviderConfig,
            "embedding_model",
            "Embedding model name: required for ollama (e.g. all-minilm); for local, empty or "
            "all-MiniLM-L6-v2 (the one model it ships). Changing it means re-embedding.",
        ),
    )
    embedding_batch_size = models.IntegerField(
        default=ProviderConfig.embedding_batch_size,
        help_text=_help(ProviderConfig, "embedding_batch_size", "Texts embedded per batch."),
    )
    generation_backend = models.CharField(
        max_length=16,
        choices=[("extractive", "extractive (sentences of the sources)"), ("ollama", "ollama")],
        default=ProviderConfig.generation_backend,
        help_text=_help(ProviderConfig, "generation_backend", "What writes the answers."),
    )
    generation_model = models.CharField(
        max_length=200,
        blank=True,
        default=ProviderConfig.generation_model,
        help_text=_help(ProviderConfig, "generation_model", "Ollama chat model; required when generation is ollama."),
    )
    keep_alive = models.CharField(
        max_length=32,
        default=ProviderConfig.keep_alive,
        help_text=_help(
            ProviderConfig,
            "keep_alive",
            "How long Ollama keeps the model loaded after a request (5m, 1h, 0, -1 = forever).",
        ),
    )
    num_ctx = models.IntegerField(
        "context window (num_ctx)",
        default=ProviderConfig.num_ctx,
        help_text=_help(
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
        if not _DURATION.match(self.keep_alive or ""):
            errors["keep_alive"] = "Use a duration such as 30s, 5m, 1h, 0 (unload at once) or -1 (keep loaded)."
        return errors

    @classmethod
    def values_from(cls, section: Any) -> dict[str, Any]:
        values = super().values_from(section)
        if section.embedding_backend == "ollama":  # an ollama row always names its model
            values["embedding_model"] = section.resolved_embedding_model
        return values

    @staticmethod
    def chunks_to_reembed(embedder_name: str) -> list[tuple[str, str, int]]:
        """(collection, embedding model, chunks) of the chunks another model than ``embedder_name`` embedded."""
        from rag.models import Chunk

        rows = (
            Chunk.objects.exclude(embedding_model=embedder_name)
            .values_list("collection__name", "embedding_model")
            .annotate(n=Count("id"))
            .order_by("collection__name", "embedding_model")
        )
        return [(name, model, n) for name, model, n in rows]


class BreakerSettings(SettingsRow):
    enabled = models.BooleanField(
        default=BreakerConfig.enabled,
        help_text=_help(BreakerConfig, "enabled", "Off: every call goes to Ollama, whatever its failures."),
    )
    failure_threshold = models.IntegerField(
        default=BreakerConfig.failure_threshold,
        help_text=_help(BreakerConfig, "failure_threshold", "Consecutive failures that open the breaker."),
    )
    failure_rate_threshold = models.FloatField(
        default=BreakerConfig.failure_rate_threshold,
        help_text=_help(
            BreakerConfig,
            "failure_rate_threshold",
            "Share of failed calls in the window that opens the breaker (0.5 = half).",
        ),
    )
    window_size = models.IntegerField(
        default=BreakerConfig.window_size,
        help_text=_help(BreakerConfig, "window_size", "Recent calls the failure rate is computed over."),
    )
    recovery_timeout = models.FloatField(
        "recovery timeout (s)",
        default=BreakerConfig.recovery_timeout,
        help_text=_help(
            BreakerConfig, "recovery_timeout", "Seconds an open breaker waits before letting trial calls through."
        ),
    )
    half_open_max_calls = models.IntegerField(
        default=BreakerConfig.half_open_max_calls,
        help_text=_help(BreakerConfig, "half_open_max_calls", "Trial calls allowed at the same time while half-open."),
    )
    success_threshold = models.IntegerField(
        default=BreakerConfig.success_threshold,
        help_text=_help(BreakerConfig, "success_threshold", "Successful trial calls that close the breaker again."),
    )
    slow_call_seconds = models.FloatField(
        "slow call (s)",
        default=BreakerConfig.slow_call_seconds,
        help_text=_help(
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
        help_text=_help(PoolConfig, "pool_connections", "Hosts whose connections are kept (one per Ollama server)."),
    )
    pool_maxsize = models.IntegerField(
        default=PoolConfig.pool_maxsize,
        help_text=_help(PoolConfig, "pool_maxsize", "Connections kept open to Ollama per worker process."),
    )
    pool_block = models.BooleanField(
        default=PoolConfig.pool_block,
        help_text=_help(
            PoolConfig, "pool_block", "On: a call waits for a free connection; off: it opens an extra one."
        ),
    )
    connect_timeout = models.FloatField(
        "connect timeout (s)",
        default=PoolConfig.connect_timeout,
        help_text=_help(PoolConfig, "connect_timeout", "Seconds to wait for a connection."),
    )
    read_timeout = models.FloatField(
        "read timeout (s)",
        default=PoolConfig.read_timeout,
        help_text=_help(
            PoolConfig, "read_timeout", "Seconds to wait for Ollama's answer to start (or between stream pieces)."
        ),
    )
    max_retries = models.IntegerField(
        default=PoolConfig.max_retries,
        help_text=_help(
            PoolConfig, "max_retries", "Retries of a refused connection or a listed status; 0 turns retries off."
        ),
    )
    backoff_factor = models.FloatField(
        default=PoolConfig.backoff_factor,
        help_text=_help(PoolConfig, "backoff_factor", "Seconds before the first retry, doubling each time."),
    )
    backoff_jitter = models.FloatField(
        default=PoolConfig.backoff_jitter,
        help_text=_help(PoolConfig, "backoff_jitter", "Random seconds added to each backoff."),
    )
    backoff_max = models.FloatField(
        default=PoolConfig.backoff_max,
        help_text=_help(PoolConfig, "backoff_max", "Longest wait between retries, in seconds."),
    )
    retry_statuses = models.CharField(
        max_length=200,
        blank=True,
        default=",".join(str(s) for s in PoolConfig.retry_statuses),
        help_text=_help(PoolConfig, "retry_statuses", "HTTP statuses that are retried, comma-separated; empty: none."),
    )
    retry_after_max = models.FloatField(
        default=PoolConfig.retry_after_max,
        help_text=_help(PoolConfig, "retry_after_max", "Longest Retry-After (seconds) a server may make a retry wait."),
    )
    retry_budget_ratio = models.FloatField(
        default=PoolConfig.retry_budget_ratio,
        help_text=_help(
            PoolConfig, "retry_budget_ratio", "Retries may add at most this share of recent requests (0.2 = 20%)."
        ),
    )
    retry_budget_min = models.IntegerField(
        default=PoolConfig.retry_budget_min,
        help_text=_help(PoolConfig, "retry_budget_min", "Retries always allowed per budget window."),
    )
    retry_budget_window = models.FloatField(
        default=PoolConfig.retry_budget_window,
        help_text=_help(PoolConfig, "retry_budget_window", "Seconds of history the retry budget counts."),
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
        values = {f.name: getattr(self, f.name) for f in fields(PoolConfig)}
        values["retry_statuses"] = self.status_codes() or ()
        return PoolConfig(**values)

    @classmethod
    def values_from(cls, section: Any) -> dict[str, Any]:
        values = super().values_from(section)
        values["retry_statuses"] = ",".join(str(code) for code in section.retry_statuses)
        return values


class CacheSettings(SettingsRow):
    enabled = models.BooleanField(
        default=CacheConfig.enabled,
        help_text=_help(CacheConfig, "enabled", "Off: every question is answered afresh (lookups stop at once)."),
    )
    similarity_threshold = models.FloatField(
        default=CacheConfig.similarity_threshold,
        help_text=_help(
            CacheConfig, "similarity_threshold", "Cosine similarity above which a cached question counts as the same."
        ),
    )
    max_entries = models.IntegerField(
        default=CacheConfig.max_entries,
        help_text=_help(CacheConfig, "max_entries", "Cached answers kept; the least recently used go first."),
    )
    ttl_seconds = models.IntegerField(
        "time to live (s)",
        default=CacheConfig.ttl_seconds,
        help_text=_help(CacheConfig, "ttl_seconds", "Seconds an answer is served after it was cached."),
    )
    serve_stale_seconds = models.IntegerField(
        "serve stale (s)",
        default=CacheConfig.serve_stale_seconds,
        help_text=_help(
            CacheConfig,
            "serve_stale_seconds",
            "Seconds past its TTL an answer may still be served, marked stale, while Ollama is down.",
        ),
    )

    config_class = CacheConfig
    section = "cache"
    rules = {
        "similarity_threshold": FRACTION,
        "max_entries": AT_LEAST_ONE,
        "ttl_seconds": AT_LEAST_ONE,
        "serve_stale_seconds": AT_LEAST_ZERO,
    }

    class Meta(SettingsRow.Meta):
        verbose_name = verbose_name_plural = "Semantic cache settings"


_RATE = re.compile(r"^\d+/(s|sec|second|m|min|minute|h|hour|d|day)$")
RATE: Rule = (lambda v: v == "" or bool(_RATE.match(v)), 'Use a rate like "120/minute" (or leave empty for no limit).')


class AccessSettings(SettingsRow):
    queries_require_key = models.BooleanField(
        default=AccessConfig.queries_require_key,
        help_text=_help(AccessConfig, "queries_require_key", "On: questions and document reads need an API key too."),
    )
    ip_rate = models.CharField(
        "rate per client address",
        max_length=30,
        blank=True,
        default=AccessConfig.ip_rate,
        help_text=_help(AccessConfig, "ip_rate", "Requests allowed per client address without a key; empty: no limit."),
    )
    key_rate = models.CharField(
        "rate per API key",
        max_length=30,
        blank=True,
        default=AccessConfig.key_rate,
        help_text=_help(AccessConfig, "key_rate", "Requests allowed per API key; empty: no limit."),
    )

    config_class = AccessConfig
    section = "access"
    rules = {"ip_rate": RATE, "key_rate": RATE}

    class Meta(SettingsRow.Meta):
        verbose_name = verbose_name_plural = "API access settings"


# The order RuntimeConfig lists them; resilience.live reads their versions in one query.
SETTINGS_MODELS: tuple[type[SettingsRow], ...] = (
    ProviderSettings,
    BreakerSettings,
    PoolSettings,
    CacheSettings,
    AccessSettings,
)


# BREAKERS ACROSS PROCESSES


class BreakerCommand(models.Model):
    """An operator's order to every process's breaker; each applies it at its next settings check."""

    FORCE_OPEN = "force_open"
    RESET = "reset"

    breaker = models.CharField(max_length=64)
    action = models.CharField(max_length=16, choices=[(FORCE_OPEN, "force open"), (RESET, "reset to closed")])
    requested_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.breaker}"

    def apply(self) -> None:
        """Carry the order out on this process's breaker."""
        from resilience.breaker import CLOSED, get_breaker

        breaker = get_breaker(self.breaker)
        by = f" by {self.requested_by}" if self.requested_by else ""
        if self.action == self.FORCE_OPEN:
            breaker.force_open(f"forced open in the admin{by}")
        else:
            snapshot = breaker.snapshot()
            if snapshot["state"] != CLOSED or snapshot["forced"]:
                breaker.reset(f"reset in the admin{by}")


class BreakerReport(models.Model):
    """One breaker of one process as that process last reported it (resilience.live)."""

    STALE_SECONDS = 60  # an idle process reports nothing: it shows as stale until its next request

    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    breaker = models.CharField(max_length=64)
    state = models.CharField(max_length=16)
    forced = models.BooleanField(default=False, help_text="Forced open by an operator.")
    total_calls = models.PositiveBigIntegerField(default=0)
    success_count = models.PositiveBigIntegerField("successes", default=0)
    failure_count = models.PositiveBigIntegerField("failures", default=0)
    rejected_calls = models.PositiveBigIntegerField("rejected", default=0)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_state_change = models.DateTimeField(null=True, blank=True)
    transitions = models.JSONField(default=list, help_text="The last few transitions, oldest first.")
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["breaker", "host", "pid"]
        constraints = [models.UniqueConstraint(fields=["host", "pid", "breaker"], name="breakerreport_unique")]

    def __str__(self) -> str:
        return f"{self.breaker} @ {self.host}:{self.pid}"

    def is_stale(self, now: datetime) -> bool:
        return (now - self.last_seen).total_seconds() > self.STALE_SECONDS

    @classmethod
    def from_snapshot(cls, host: str, pid: int, snapshot: dict[str, Any], seen: datetime) -> BreakerReport:
        changed = snapshot["last_state_change"]
        return cls(
            host=host,
            pid=pid,
            breaker=snapshot["name"],
            state=snapshot["state"],
            forced=snapshot["forced"],
            total_calls=snapshot["total_calls"],
            success_count=snapshot["success_count"],
            failure_count=snapshot["failure_count"],
            rejected_calls=snapshot["rejected_calls"],
            consecutive_failures=snapshot["consecutive_failures"],
            last_state_change=datetime.fromtimestamp(changed, tz=UTC) if changed else None,
            transitions=snapshot["transitions"][-5:],
            last_seen=seen,
        )
