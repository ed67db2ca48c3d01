"""Output shapes of the metric endpoints (they also document them in the OpenAPI schema)."""

from __future__ import annotations

from rest_framework import serializers


class BreakerMetricsSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=["closed", "open", "half_open"])
    failure_count = serializers.IntegerField()
    success_count = serializers.IntegerField()
    consecutive_failures = serializers.IntegerField()
    total_calls = serializers.IntegerField()
    rejected_calls = serializers.IntegerField()
    last_failure_time = serializers.FloatField(allow_null=True, help_text="Unix time")
    last_state_change = serializers.FloatField(allow_null=True, help_text="Unix time")
    retry_after = serializers.FloatField(help_text="Seconds until an open breaker admits a trial call")
    config = serializers.DictField()


class BreakersMetricsSerializer(serializers.Serializer):
    pid = serializers.IntegerField(help_text="The worker process that answered: each has its own breakers")
    breakers = serializers.DictField(child=BreakerMetricsSerializer())


class PoolMetricsSerializer(serializers.Serializer):
    pool_connections = serializers.IntegerField()
    pool_maxsize = serializers.IntegerField()
    pool_block = serializers.BooleanField()
    timeouts = serializers.DictField(child=serializers.FloatField())
    retries = serializers.DictField()
    total_requests = serializers.IntegerField(help_text="Summed over every worker")
    retries_total = serializers.IntegerField(help_text="Summed over every worker")
    retries_by_reason = serializers.DictField(child=serializers.IntegerField())
    budget_exhausted = serializers.IntegerField()


class CacheMetricsSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    hits = serializers.IntegerField()
    exact_hits = serializers.IntegerField()
    semantic_hits = serializers.IntegerField()
    misses = serializers.IntegerField()
    hit_rate = serializers.FloatField()
    size = serializers.IntegerField()
    max_size = serializers.IntegerField()
    fill_ratio = serializers.FloatField()
    evictions = serializers.IntegerField()
    ttl_seconds = serializers.IntegerField()
    threshold = serializers.FloatField()
    # Beyond the reference shape: what else the cache counts.
    bypasses = serializers.IntegerField(required=False)
    expirations = serializers.IntegerField(required=False)
    invalidations = serializers.IntegerField(required=False)
    stale_served = serializers.IntegerField(required=False)
    unadmitted = serializers.IntegerField(
        required=False, help_text="Anonymous answers not stored because the cache was full and the question new."
    )
    errors = serializers.IntegerField(required=False)
    serve_stale_seconds = serializers.IntegerField(required=False)
