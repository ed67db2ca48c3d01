"""The settings rows of the service around the calls to Ollama: the answer and embedding caches,
access and throttles, background jobs (see resilience.models.settings)."""

from __future__ import annotations

import re

from django.db import models

from resilience.config import AccessConfig, CacheConfig, JobsConfig
from resilience.models.base import AT_LEAST_ONE, AT_LEAST_ZERO, FRACTION, Rule, SettingsRow, at_most, help_text


class CacheSettings(SettingsRow):
    enabled = models.BooleanField(
        default=CacheConfig.enabled,
        help_text=help_text(CacheConfig, "enabled", "Off: every question is answered afresh (lookups stop at once)."),
    )
    similarity_threshold = models.FloatField(
        default=CacheConfig.similarity_threshold,
        help_text=help_text(
            CacheConfig, "similarity_threshold", "Cosine similarity above which a cached question counts as the same."
        ),
    )
    max_entries = models.IntegerField(
        default=CacheConfig.max_entries,
        validators=at_most(CacheConfig, "max_entries"),
        help_text=help_text(CacheConfig, "max_entries", "Cached answers kept; the least recently used go first."),
    )
    ttl_seconds = models.IntegerField(
        "time to live (s)",
        default=CacheConfig.ttl_seconds,
        validators=at_most(CacheConfig, "ttl_seconds"),
        help_text=help_text(CacheConfig, "ttl_seconds", "Seconds an answer is served after it was cached."),
    )
    serve_stale_seconds = models.IntegerField(
        "serve stale (s)",
        default=CacheConfig.serve_stale_seconds,
        validators=at_most(CacheConfig, "serve_stale_seconds"),
        help_text=help_text(
            CacheConfig,
            "serve_stale_seconds",
            "Seconds past its TTL an answer may still be served, marked stale, while Ollama is down.",
        ),
    )
    embedding_max_entries = models.IntegerField(
        "embedding cache entries",
        default=CacheConfig.embedding_max_entries,
        validators=at_most(CacheConfig, "embedding_max_entries"),
        help_text=help_text(
            CacheConfig,
            "embedding_max_entries",
            "Vectors the embedding cache keeps (about 1.7 KB each at 384 dimensions); the oldest go first, "
            "every 10 minutes.",
        ),
    )

    config_class = CacheConfig
    section = "cache"
    rules = {
        "similarity_threshold": FRACTION,
        "max_entries": AT_LEAST_ONE,
        "ttl_seconds": AT_LEAST_ONE,
        "serve_stale_seconds": AT_LEAST_ZERO,
        "embedding_max_entries": AT_LEAST_ONE,
    }

    class Meta(SettingsRow.Meta):
        verbose_name = verbose_name_plural = "Semantic cache settings"


_RATE = re.compile(r"^\d+/(s|sec|second|m|min|minute|h|hour|d|day)$")
RATE: Rule = (lambda v: v == "" or bool(_RATE.match(v)), 'Use a rate like "120/minute" (or leave empty for no limit).')


class AccessSettings(SettingsRow):
    queries_require_key = models.BooleanField(
        default=AccessConfig.queries_require_key,
        help_text=help_text(
            AccessConfig, "queries_require_key", "On: questions and document reads need an API key too."
        ),
    )
    ip_rate = models.CharField(
        "rate per client address",
        max_length=30,
        blank=True,
        default=AccessConfig.ip_rate,
        help_text=help_text(
            AccessConfig, "ip_rate", "Requests allowed per client address without a key; empty: no limit."
        ),
    )
    key_rate = models.CharField(
        "rate per API key",
        max_length=30,
        blank=True,
        default=AccessConfig.key_rate,
        help_text=help_text(AccessConfig, "key_rate", "Requests allowed per API key; empty: no limit."),
    )

    config_class = AccessConfig
    section = "access"
    rules = {"ip_rate": RATE, "key_rate": RATE}

    class Meta(SettingsRow.Meta):
        verbose_name = verbose_name_plural = "API access settings"


class JobSettings(SettingsRow):
    max_attempts = models.IntegerField(
        default=JobsConfig.max_attempts,
        validators=at_most(JobsConfig, "max_attempts"),
        help_text=help_text(
            JobsConfig,
            "max_attempts",
            "Attempts a job gets while embeddings are unavailable (Ollama down, breaker open) before it fails.",
        ),
    )
    retry_delay_seconds = models.FloatField(
        "first retry after (s)",
        default=JobsConfig.retry_delay_seconds,
        validators=at_most(JobsConfig, "retry_delay_seconds"),
        help_text=help_text(JobsConfig, "retry_delay_seconds", "Seconds before the first retry; doubled each time."),
    )
    retry_delay_max_seconds = models.FloatField(
        "longest wait between retries (s)",
        default=JobsConfig.retry_delay_max_seconds,
        validators=at_most(JobsConfig, "retry_delay_max_seconds"),
        help_text=help_text(JobsConfig, "retry_delay_max_seconds", "The doubling stops here."),
    )
    query_log_retention_days = models.IntegerField(
        "keep the query log (days)",
        default=JobsConfig.query_log_retention_days,
        validators=at_most(JobsConfig, "query_log_retention_days"),
        help_text=help_text(
            JobsConfig, "query_log_retention_days", "Questions older than this are deleted from the query log."
        ),
    )
    job_retention_days = models.IntegerField(
        "keep finished jobs (days)",
        default=JobsConfig.job_retention_days,
        validators=at_most(JobsConfig, "job_retention_days"),
        help_text=help_text(
            JobsConfig,
            "job_retention_days",
            "Finished jobs, and the uploads of failed and cancelled ones (kept for a retry), go after this.",
        ),
    )

    config_class = JobsConfig
    section = "jobs"
    rules = {
        "max_attempts": AT_LEAST_ONE,
        "retry_delay_seconds": AT_LEAST_ZERO,
        "retry_delay_max_seconds": AT_LEAST_ZERO,
        "query_log_retention_days": AT_LEAST_ONE,
        "job_retention_days": AT_LEAST_ONE,
    }

    class Meta(SettingsRow.Meta):
        verbose_name = verbose_name_plural = "Job settings"
