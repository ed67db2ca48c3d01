from django.contrib.auth import views as auth_views
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from rag import apis, views

urlpatterns = [
    path("", views.search, name="search"),
    # Django's own sign-in and sign-out, in the search page's style (templates/registration/).
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/query", apis.QueryApi.as_view(), name="api-query"),
    path("api/feedback", apis.FeedbackApi.as_view(), name="api-feedback"),
    path("feedback", views.feedback, name="feedback"),
    path("api/documents", apis.DocumentListApi.as_view(), name="api-documents"),
    path("api/documents/<int:pk>", apis.DocumentDetailApi.as_view(), name="api-document"),
    path("api/jobs/<int:pk>", apis.JobDetailApi.as_view(), name="api-job"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
