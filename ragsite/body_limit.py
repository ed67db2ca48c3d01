"""Refuse a request body over its limit from the Content-Length, before reading any of it.

Bodies are limited to ``RAGSITE_MAX_BODY_BYTES``; only a multipart upload to /api/documents gets
``RAGSITE_MAX_UPLOAD_BYTES`` for its file. The refusal is a 413 in the API's one error shape; a
Content-Length that is not a number is a 400.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from rag.errors import error_body

# Room for the multipart boundaries and the small form fields (collection, title, source) that
# come with an uploaded file.
MULTIPART_ALLOWANCE = 64 * 1024


def body_limit(request: HttpRequest) -> int:
    """The most bytes this request's body may have."""
    if (
        request.method == "POST"
        and request.content_type == "multipart/form-data"
        and request.path == reverse("api-documents")
    ):
        return settings.RAGSITE_MAX_UPLOAD_BYTES + MULTIPART_ALLOWANCE
    return settings.RAGSITE_MAX_BODY_BYTES


class BodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        header = request.META.get("CONTENT_LENGTH") or "0"
        if not header.isascii() or not header.isdigit():
            # Servers in front usually refuse it; runserver passes it on, and code reading it after
            # this (the metrics middleware) would fail on it.
            message = f"The Content-Length header is not a number of bytes: {header[:40]!r}."
            return JsonResponse(error_body("malformed_request", message), status=400)
        length = int(header)
        limit = body_limit(request)
        if length > limit:
            message = f"The request body is too large: {length} bytes, the limit is {limit}."
            return JsonResponse(error_body("too_large", message), status=413)
        return self.get_response(request)
