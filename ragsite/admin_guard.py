"""Refuse admin URLs whose filter values no database column could hold, before the admin runs.

The admin's changelists pass filter values (``?status__exact=...``, ``?created_at__year=...``)
to the database as they come: a NUL character (which no Postgres text can hold) or a year past
9999 failed there, as a 500. Such a URL is a 400 instead; the admin's own checks (``?e=1``)
handle every other odd value.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

DATE_PARTS = ("__year", "__month", "__day")


def refusal(request: HttpRequest) -> str | None:
    """Why this admin request's query string cannot be run, or None."""
    for name, values in request.GET.lists():
        for value in values:
            if "\x00" in name or "\x00" in value:
                return "The query string holds a NUL character."
            if name.endswith(DATE_PARTS) and not (value.isascii() and value.isdigit() and len(value) <= 4):
                return f"{name} takes a number of at most four digits."
    return None


class AdminGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/admin/"):
            reason = refusal(request)
            if reason:
                return HttpResponseBadRequest(reason, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
