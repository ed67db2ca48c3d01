from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # Our /metrics replaces django_prometheus.urls: it adds scrape-time metrics and access control.
    path("", include("resilience.urls")),
    path("", include("rag.urls")),
]

handler404 = "rag.errors.json_404"
handler500 = "rag.errors.json_500"
