"""An X-Request-ID on every response and in every log line.

The id is taken from the request when a proxy or client sent a sane one (so one id follows a
request across services), otherwise generated.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

_current: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
HEADER = "X-Request-ID"


def current_request_id() -> str:
    return _current.get()


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(HEADER, "")
        request_id = incoming if _SANE.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = _current.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response[HEADER] = request_id
        return response


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # django.request logs a failed response after the middleware has returned; it passes the
        # request along, which still carries its id.
        request = getattr(record, "request", None)
        record.request_id = getattr(request, "request_id", None) or _current.get()
        return True


class RoutineJobFilter(logging.Filter):
    """Drops a worker's info lines about the stalled-job sweep, which runs every few seconds."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or "rag.tasks.retry_stalled" not in record.getMessage()


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False)
