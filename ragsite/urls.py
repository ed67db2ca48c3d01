from django.contrib import admin
from django.urls import include, path

from ragsite import health, metrics_api

urlpatterns = [
    path("admin/", admin.site.urls),
    # Our /metrics replaces django_prometheus.urls: it adds scrape-time metrics and access control.
    path("metrics", metrics_api.PrometheusApi.as_view(), name="prometheus-django-metrics"),
    path("api/circuit-breaker/metrics", metrics_api.BreakerMetricsApi.as_view(), name="api-breaker-metrics"),
    path("api/connection-pool/metrics", metrics_api.PoolMetricsApi.as_view(), name="api-pool-metrics"),
    path("api/semantic-cache/metrics", metrics_api.CacheMetricsApi.as_view(), name="api-cache-metrics"),
    path("health", health.HealthApi.as_view(), name="health"),
    path("health/live", health.LiveApi.as_view(), name="health-live"),
    path("health/ready", health.ReadyApi.as_view(), name="health-ready"),
    path("", include("rag.urls")),
]

handler400 = "rag.errors.json_400"
handler404 = "rag.errors.json_404"
handler500 = "rag.errors.json_500"
