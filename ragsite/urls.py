from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
    path("", include("rag.urls")),
]

handler404 = "rag.errors.json_404"
handler500 = "rag.errors.json_500"
