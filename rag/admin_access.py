"""The admin of who may read what: API keys and their scopes, and the history of such changes.

A key is shown once, on the page answering the form that issued it. Its scope (the collections it
reads besides the public ones, or all of them, and whether it writes there) is edited afterwards;
every process applies a change at the key's next request. Staff who are not superusers grant no
more than they may read themselves (rag.visibility), and neither see nor change a key that reads
more (one for all collections, or naming a collection they may not read): to them it does not
exist.
Changes of who may read what (a key's scope here, a collection's visibility and groups in
rag.admin) are kept in the object's history as old -> new values.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers

from rag import visibility
from rag.models import ApiKey, Visibility


def caller_of(request: HttpRequest) -> visibility.Caller:
    return visibility.Caller.for_user(request.user)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple | QuerySet):
        return ", ".join(sorted(str(item) for item in value)) or "(none)"
    if value in ("", None):
        return "(empty)"
    return str(value)


class ValuesInHistory(admin.ModelAdmin):
    """Django's history names the changed fields only; who may read what should say from what to what."""

    def construct_change_message(
        self, request: HttpRequest, form: forms.ModelForm, formsets: Any, add: bool = False
    ) -> list[dict[str, Any]]:
        if add:
            return super().construct_change_message(request, form, formsets, add)
        changes = [
            f"{form.fields[name].label}: {_shown(form.initial.get(name))} → {_shown(form.cleaned_data.get(name))}"
            for name in form.changed_data
        ]
        return [{"changed": {"fields": changes}}] if changes else []


def visible_keys(request: HttpRequest, keys: QuerySet[ApiKey] | None = None) -> QuerySet[ApiKey]:
    """The keys this admin user may see (all of them for a superuser): whoever created it, a key
    reading more than the user may (all collections, or one they may not read) is not theirs to
    see, nor its name."""
    keys = ApiKey.objects.all() if keys is None else keys
    if request.user.is_superuser:
        return keys
    unreadable = ApiKey.collections.through.objects.exclude(
        collection_id__in=visibility.readable(caller_of(request)).values("pk")
    )
    return keys.filter(all_collections=False).exclude(pk__in=unreadable.values("apikey_id"))


@admin.register(ApiKey)
class ApiKeyAdmin(ValuesInHistory):
    """Staff issue and revoke API keys and set their scope. A key is shown once, right after it is created."""

    list_display = ["name", "prefix", "scope", "can_write", "created_by", "created_at", "last_used_at", "status"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "all_collections", "can_write"]
    search_fields = ["name", "prefix"]
    filter_horizontal = ["collections"]
    actions = ["revoke"]
    SCOPE = ["all_collections", "collections", "can_write"]
    INFO = ["prefix", "created_by", "created_at", "last_used_at", "revoked_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return visible_keys(request, super().get_queryset(request).prefetch_related("collections"))

    @admin.display(description="reads")
    def scope(self, key: ApiKey) -> str:
        if key.all_collections:
            return "every collection"
        names = sorted(collection.name for collection in key.collections.all())
        return "public collections" + (f" + {', '.join(names)}" if names else "")

    @admin.display(description="status")
    def status(self, key: ApiKey) -> str:
        return "active" if key.is_active else f"revoked {key.revoked_at:%Y-%m-%d %H:%M}"

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return ["name", *self.SCOPE, *(self.INFO if obj else [])]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        # The secret never changes (revoke and issue another); the scope may, and every process
        # applies it at the key's next request.
        readonly = ["name", *self.INFO] if obj else []
        if not request.user.is_superuser:
            readonly.append("all_collections")  # no one grants more than they may read
        return readonly

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "collections":
            kwargs["queryset"] = visibility.readable(caller_of(request))
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        if not super().has_change_permission(request, obj):
            return False
        if obj is None or request.user.is_superuser:
            return True
        # Checked again on the row itself: its scope may have grown since the list was shown.
        return visible_keys(request).filter(pk=obj.pk).exists()

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        row, key = ApiKey.issue(
            name=obj.name, created_by=request.user, all_collections=obj.all_collections, can_write=obj.can_write
        )
        obj.pk = row.pk
        obj.__dict__.update(row.__dict__)  # save_related then stores its collections
        obj._issued_key = key  # for response_add only: never stored

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        """The new key, shown once in this response's page.

        Not as a message: the messages cookie is signed, not encrypted, and a key in it would sit
        in the browser and in any log of request headers.
        """
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API key issued",
            "api_key": obj,
            "key": obj._issued_key,
            "changelist_url": reverse("admin:rag_apikey_changelist"),
        }
        response = TemplateResponse(request, "admin/rag/apikey/issued.html", context)
        add_never_cache_headers(response)
        return response

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # revoke instead: the row keeps who had access and when

    # Revoking changes a key: staff who may only view keys must not cut off every client.
    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = left = 0
        for key in queryset.filter(revoked_at__isnull=True):
            if not self.has_change_permission(request, key):
                left += 1
                continue
            key.revoke()
            self.log_change(request, key, "Revoked.")
            revoked += 1
        if left:
            note = f"Revoked {revoked} key(s); {left} left alone: they read collections you may not change."
            self.message_user(request, note, messages.WARNING)
        else:
            self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)


class CollectionForm(forms.ModelForm):
    """A collection's form; ``user`` is set per request (CollectionAdmin.get_form)."""

    user: Any = None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        restricted = data.get("visibility") == Visibility.RESTRICTED
        if restricted and self.user is not None and not self.user.is_superuser:
            own = set(self.user.groups.values_list("pk", flat=True))
            if not own & {group.pk for group in data.get("groups") or []}:
                self.add_error(
                    "groups",
                    "Pick at least one group you are in: a restricted collection is read by its groups' "
                    "members (and superusers) only, so without one it would vanish from your own view.",
                )
        return data
