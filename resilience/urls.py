from django.urls import path

from resilience import apis, health

urlpatterns = [
    path("metrics", apis.PrometheusApi.as_view(), name="prometheus-django-metrics"),
    path("api/circuit-breaker/metrics", apis.BreakerMetricsApi.as_view(), name="api-breaker-metrics"),
    path("api/connection-pool/metrics", apis.PoolMetricsApi.as_view(), name="api-pool-metrics"),
    path("api/semantic-cache/metrics", apis.CacheMetricsApi.as_view(), name="api-cache-metrics"),
    path("health", health.HealthApi.as_view(), name="health"),
    path("health/live", health.LiveApi.as_view(), name="health-live"),
    path("health/ready", health.ReadyApi.as_view(), name="health-ready"),
]
