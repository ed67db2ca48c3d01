"""Who may call the API, and how often: bearer API keys, staff sessions, throttles.

Document writes always need a key, or a staff session holding the model permission the admin
would ask for (``rag.add_document``, ``rag.delete_document``); queries and reads are open unless
the access settings (admin, seeded from ``RAGSITE_ACCESS_*``) say keys only. Throttles count per
key, or per client IP for callers without one, in Postgres so every worker counts against one
budget (rag.throttling).

A key is looked up at most once a second per process (``KeyCache``): a key revoked or narrowed
in another process stops working within that second, as a settings change does
(resilience.live); in the process that changed it, at once. The collections a key's scope names
are read live by every query (rag.visibility): only revoking and "all collections" wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models.signals import m2m_changed, post_delete, post_save
from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from rag.models import ApiKey
from rag.throttling import Ticket, WindowThrottle
from resilience import config

if TYPE_CHECKING:  # rest_framework.views imports this module through the API settings
    from rest_framework.views import APIView


@dataclass(frozen=True)
class KeyUser:
    """The identity behind an API key (DRF wants a user object)."""

    key: ApiKey
    is_authenticated: bool = True
    is_staff: bool = False
    is_active: bool = True

    @property
    def pk(self) -> str:
        return f"key:{self.key.pk}"


class KeyCache:
    """Keys (and wrong keys) as looked up in the last ``SECONDS``; ``timer`` is swappable for tests."""

    SECONDS = 1.0
    MAX_ENTRIES = 10_000  # wrong keys are remembered too: a flood of them must not grow it forever
    timer: Callable[[], float] = time.monotonic

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[float, ApiKey | None]] = {}

    def authenticate(self, key: str) -> ApiKey | None:
        digest = ApiKey.hash(key)
        now = self.timer()
        known = self._keys.get(digest)
        if known is not None and known[0] > now:
            return known[1]
        row = ApiKey.authenticate(key)
        with self._lock:
            if len(self._keys) >= self.MAX_ENTRIES:
                self._keys.clear()
            self._keys[digest] = (now + self.SECONDS, row)
        return row

    def forget(self, *args: object, **kwargs: object) -> None:
        """Look every key up again (a key changed in this process; tests)."""
        with self._lock:
            self._keys.clear()


keys = KeyCache()
post_save.connect(keys.forget, sender=ApiKey, weak=False, dispatch_uid="rag.access.keys.save")
post_delete.connect(keys.forget, sender=ApiKey, weak=False, dispatch_uid="rag.access.keys.delete")
m2m_changed.connect(keys.forget, sender=ApiKey.collections.through, weak=False, dispatch_uid="rag.access.keys.m2m")


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <key>``. A wrong or revoked key is a 401, never anonymous."""

    def authenticate(self, request: Request) -> tuple[KeyUser, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        key = keys.authenticate(credentials.strip())
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return KeyUser(key), key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="ragsite"'


def has_key_or_staff(request: Request) -> bool:
    if isinstance(request.auth, ApiKey):
        return True
    user = request.user
    return bool(user is not None and user.is_authenticated and user.is_staff)


def has_key_or_session(request: Request) -> bool:
    """A caller we know: an API key or a signed-in user (staff or not)."""
    user = request.user
    return isinstance(request.auth, ApiKey) or bool(user is not None and user.is_authenticated)


def queries_require_key() -> bool:
    return config.current().access.queries_require_key


class ReadOrQuery(permissions.BasePermission):
    """Queries and reads: open by default, key-only when the setting says so."""

    message = "This service needs an API key: send Authorization: Bearer <key>."

    def has_permission(self, request: Request, view) -> bool:
        return not queries_require_key() or has_key_or_staff(request)


# The model permission a staff session needs for each write, as the admin would ask for it.
WRITE_PERMISSIONS = {
    "POST": ("rag.add_document", "Adding documents"),
    "DELETE": ("rag.delete_document", "Deleting documents"),
}


class DocumentAccess(permissions.BasePermission):
    """Reads like queries; a write needs an API key, or a staff session with the model permission."""

    message = "Changing documents needs an API key (Authorization: Bearer <key>) or a staff login."

    def has_permission(self, request: Request, view) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return ReadOrQuery().has_permission(request, view)
        if isinstance(request.auth, ApiKey):
            return True
        permission, action = WRITE_PERMISSIONS.get(request.method, (None, "Changing documents"))
        self.message = (
            f"{action} needs an API key (Authorization: Bearer <key>) or a staff login "
            f"with the {permission or 'matching'} permission."
        )
        user = request.user
        return bool(
            permission and user is not None and user.is_authenticated and user.is_staff and user.has_perm(permission)
        )


class PerKeyThrottle(WindowThrottle):
    scope = "key"

    def get_rate(self) -> str | None:
        return config.current().access.key_rate or None

    def get_cache_key(self, request: Request, view) -> str | None:
        if not isinstance(request.auth, ApiKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}


class PerIpThrottle(WindowThrottle):
    """Callers without a key share a budget per client address."""

    scope = "ip"

    def get_rate(self) -> str | None:
        return config.current().access.ip_rate or None

    def get_cache_key(self, request: Request, view) -> str | None:
        if isinstance(request.auth, ApiKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def throttle_ticket(request: Request, view: APIView) -> Ticket | None:
    """The request's throttle (of the view's ``WindowThrottle``s, the one that applies), to be
    counted by the question's first statement (rag.first_look)."""
    for throttle in view.get_throttles():
        ticket = throttle.ticket(request, view) if isinstance(throttle, WindowThrottle) else None
        if ticket is not None:
            return ticket
    return None


def enforce(request: HttpRequest, view_class: type[APIView], *, throttle: bool = True) -> Request:
    """Hold a plain Django view to an API view's authentication, permissions and throttles.

    The search page answers through the same service as ``POST /api/query`` but outside DRF: this
    runs DRF's own checks with that view's classes, so the page obeys the same rules and spends the
    same throttle budget. Raises what the API view would (NotAuthenticated, AuthenticationFailed,
    PermissionDenied, Throttled); ``throttle=False`` checks access without spending the budget.
    """
    view = view_class()
    view.args, view.kwargs, view.headers = (), {}, {}
    drf_request = view.initialize_request(request)
    view.request = drf_request
    view.perform_authentication(drf_request)
    view.check_permissions(drf_request)
    if throttle:  # counted now, in a statement of its own (QueryApi itself defers it)
        from rest_framework.views import APIView

        APIView.check_throttles(view, drf_request)
    return drf_request


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Documents the bearer key in the OpenAPI schema."""

    target_class = "rag.access.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API key issued in the admin."}
