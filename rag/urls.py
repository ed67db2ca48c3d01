from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from rag import apis, views

urlpatterns = [
    path("", views.search, name="search"),
    path("api/query", apis.QueryApi.as_view(), name="api-query"),
    path("api/feedback", apis.FeedbackApi.as_view(), name="api-feedback"),
    path("feedback", views.feedback, name="feedback"),
    path("api/documents", apis.DocumentListApi.as_view(), name="api-documents"),
    path("api/documents/<int:pk>", apis.DocumentDetailApi.as_view(), name="api-document"),
    path("api/jobs/<int:pk>", apis.JobDetailApi.as_view(), name="api-job"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
