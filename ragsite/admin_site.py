"""The admin site: Django's, plus the operations overview linked from its index.

Installed in place of ``django.contrib.admin`` (``OpsAdminConfig`` in INSTALLED_APPS), so
``admin.site`` is this site everywhere and the URLconf stays ``admin.site.urls``.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path


class OpsAdminSite(admin.AdminSite):
    site_header = "RAGsite administration"
    site_title = "RAGsite admin"
    index_title = "Settings, breakers, cache and documents"
    index_template = "admin/ops_index.html"

    def get_urls(self) -> list[URLResolver | URLPattern]:
        # admin_view: staff only, anyone else gets the login page.
        return [path("overview/", self.admin_view(self.overview_view), name="overview"), *super().get_urls()]

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        # Imported here: this module is loaded with INSTALLED_APPS, before any model can be.
        from ragsite.overview import overview

        return overview(request, self)


class OpsAdminConfig(AdminConfig):
    default_site = "ragsite.admin_site.OpsAdminSite"
