"""The admin of the resilience layer: live settings and breakers across processes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

from resilience import live, orders
from resilience.client import OPERATIONS
from resilience.config import ProviderConfig
from resilience.models import (
    AccessSettings,
    BreakerCommand,
    BreakerReport,
    BreakerSettings,
    CacheSettings,
    JobSettings,
    PoolSettings,
    ProviderSettings,
    SettingsRow,
)

# What an embedding model change would leave behind: (collection, embedding model, chunks) of the
# chunks that another model than the given one embedded. Documents are the domain's, so the domain
# installs its finder at start-up (rag.apps.RagConfig.ready); until then nothing is checked.
StaleChunkFinder = Callable[[str], list[tuple[str, str, int]]]


def _nothing_stale(embedder_name: str) -> list[tuple[str, str, int]]:
    return []


_stale_chunk_finder: StaleChunkFinder = _nothing_stale


def use_stale_chunk_finder(finder: StaleChunkFinder) -> None:
    global _stale_chunk_finder
    _stale_chunk_finder = finder


def stale_chunks(embedder_name: str) -> list[tuple[str, str, int]]:
    return _stale_chunk_finder(embedder_name)


STATE_COLOURS = {"closed": "#2e7d32", "half_open": "#ef6c00", "open": "#c62828"}


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value in ("", None):
        return "(empty)"
    return str(value)


# SETTINGS


class SettingsAdmin(admin.ModelAdmin):
    """A singleton: no list, no add, no delete; saving applies it in every process."""

    save_on_top = True

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        row = self.model.load()
        opts = row._meta
        return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[row.pk]))

    def construct_change_message(
        self, request: HttpRequest, form: forms.ModelForm, formsets: Any, add: bool = False
    ) -> list[dict[str, Any]]:
        """Django records the names of changed fields only; history should say what they were."""
        if add:
            return super().construct_change_message(request, form, formsets, add)
        model_fields = {f.name for f in self.model._meta.concrete_fields}
        changes = [
            f"{form.fields[name].label}: {_shown(form.initial.get(name))} → {_shown(form.cleaned_data.get(name))}"
            for name in form.changed_data
            if name in model_fields
        ]
        return [{"changed": {"fields": changes}}] if changes else []

    def save_model(self, request: HttpRequest, obj: SettingsRow, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        live.refresh()  # this process at once; the others at their next check, within a second
        messages.info(request, "Every worker process applies the change within 2 seconds.")


class ProviderSettingsForm(forms.ModelForm):
    reembed_later = forms.BooleanField(
        label="Switch now, re-embed afterwards",
        required=False,
        help_text=(
            "Allow an embedding model change while chunks of another model exist. Until "
            "'manage.py reembed --all' has converted them, vector search only sees the chunks "
            "already embedded by the new model (full-text search still sees all)."
        ),
    )

    class Meta:
        model = ProviderSettings
        fields = [f.name for f in ProviderSettings._meta.get_fields() if f.editable and not f.auto_created]

    def _post_clean(self) -> None:
        """After the row's own validation: only a valid new model is worth checking the chunks for."""
        super()._post_clean()
        if self.errors or self.cleaned_data.get("reembed_later"):
            return
        old = ProviderConfig(
            embedding_backend=self.initial.get("embedding_backend", ""),
            embedding_model=self.initial.get("embedding_model", ""),
        ).embedder_name
        new = self.instance.to_config()
        if new.embedder_name == old:
            return
        stale = stale_chunks(new.embedder_name)
        if stale:
            listed = "; ".join(f"{collection}: {n} chunks of {name}" for collection, name, n in stale)
            command = f"python manage.py reembed --all --backend {new.embedding_backend}"
            if new.embedding_model:
                command += f" --model {new.embedding_model}"
            self.add_error(
                "embedding_model",
                f"Chunks embedded by another model exist ({listed}), and queries would no longer find them "
                f"by meaning. Re-embed them first with '{command}' and save again, or tick "
                "'Switch now, re-embed afterwards'.",
            )


@admin.register(ProviderSettings)
class ProviderSettingsAdmin(SettingsAdmin):
    form = ProviderSettingsForm
    fieldsets = [
        ("Ollama", {"fields": ["ollama_base_url", "keep_alive", "num_ctx"]}),
        ("Embeddings", {"fields": ["embedding_backend", "embedding_model", "embedding_batch_size", "reembed_later"]}),
        ("Answers", {"fields": ["generation_backend", "generation_model"]}),
    ]

    def save_model(self, request: HttpRequest, obj: SettingsRow, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        name = obj.to_config().embedder_name
        stale = stale_chunks(name)
        if stale:
            total = sum(n for _, _, n in stale)
            messages.warning(
                request,
                f"{total} chunks are not embedded by {name}: vector search skips them until "
                "'python manage.py reembed --all' has re-embedded them.",
            )


@admin.register(BreakerSettings)
class BreakerSettingsAdmin(SettingsAdmin):
    fieldsets = [
        (None, {"fields": ["enabled"]}),
        ("Opening", {"fields": ["failure_threshold", "failure_rate_threshold", "window_size", "slow_call_seconds"]}),
        ("Recovery", {"fields": ["recovery_timeout", "half_open_max_calls", "success_threshold"]}),
    ]


@admin.register(PoolSettings)
class PoolSettingsAdmin(SettingsAdmin):
    fieldsets = [
        ("Connections", {"fields": ["pool_connections", "pool_maxsize", "pool_block"]}),
        ("Timeouts", {"fields": ["connect_timeout", "read_timeout"]}),
        (
            "Retries",
            {
                "fields": [
                    "max_retries",
                    "retry_statuses",
                    "backoff_factor",
                    "backoff_jitter",
                    "backoff_max",
                    "retry_after_max",
                ]
            },
        ),
        ("Retry budget", {"fields": ["retry_budget_ratio", "retry_budget_min", "retry_budget_window"]}),
    ]


@admin.register(CacheSettings)
class CacheSettingsAdmin(SettingsAdmin):
    pass


@admin.register(AccessSettings)
class AccessSettingsAdmin(SettingsAdmin):
    pass


@admin.register(JobSettings)
class JobSettingsAdmin(SettingsAdmin):
    fieldsets = [
        ("Retries", {"fields": ["max_attempts", "retry_delay_seconds", "retry_delay_max_seconds"]}),
        ("Retention", {"fields": ["query_log_retention_days", "job_retention_days"]}),
    ]


# BREAKERS


def send_command(request: HttpRequest, action: str, breakers: list[str]) -> None:
    """Order every process's breakers; this process applies it now, the others within a second."""
    orders.give(action, breakers, requested_by=request.user.get_username())
    verb = "Forced open" if action == BreakerCommand.FORCE_OPEN else "Reset to closed"
    messages.success(request, f"{verb}: {', '.join(breakers)}. Every worker process applies it within 2 seconds.")


@admin.register(BreakerReport)
class BreakerReportAdmin(admin.ModelAdmin):
    list_display = [
        "breaker",
        "process",
        "state_badge",
        "forced",
        "total_calls",
        "success_count",
        "failure_count",
        "rejected_calls",
        "consecutive_failures",
        "last_transition",
        "seen",
    ]
    list_filter = ["breaker", "state", "forced", "host"]
    actions = ["force_open", "reset"]
    change_list_template = "admin/resilience/breakerreport/change_list.html"
    readonly_fields = [f.name for f in BreakerReport._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a report is what a process said; actions carry the orders

    def has_command_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("resilience.add_breakercommand")

    @admin.display(description="process")
    def process(self, obj: BreakerReport) -> str:
        return f"{obj.host}:{obj.pid}"

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: BreakerReport) -> str:
        colour = STATE_COLOURS.get(obj.state, "#555")
        return format_html('<strong style="color: {}">{}</strong>', colour, obj.state.replace("_", "-"))

    @admin.display(description="last transition")
    def last_transition(self, obj: BreakerReport) -> str:
        if not obj.transitions:
            return "—"
        last = obj.transitions[-1]
        when = datetime.fromtimestamp(last["time"], tz=timezone.get_current_timezone())
        return f"{last['from']} → {last['to']} ({last['reason']}), {timesince(when)} ago"

    @admin.display(description="last seen", ordering="last_seen")
    def seen(self, obj: BreakerReport) -> str:
        ago = f"{timesince(obj.last_seen)} ago"
        if obj.is_stale(timezone.now()):
            return format_html('<span style="color: #888">{} (stale: idle or exited)</span>', ago)
        return ago

    @admin.action(description="Force open (maintenance) in every process", permissions=["command"])
    def force_open(self, request: HttpRequest, queryset: QuerySet[BreakerReport]) -> None:
        send_command(request, BreakerCommand.FORCE_OPEN, sorted(set(queryset.values_list("breaker", flat=True))))

    @admin.action(description="Reset to closed in every process", permissions=["command"])
    def reset(self, request: HttpRequest, queryset: QuerySet[BreakerReport]) -> None:
        send_command(request, BreakerCommand.RESET, sorted(set(queryset.values_list("breaker", flat=True))))

    def get_urls(self) -> list[URLPattern]:
        return [
            path("command/", self.admin_site.admin_view(self.command_all_view), name="resilience_breaker_command"),
            *super().get_urls(),
        ]

    def command_all_view(self, request: HttpRequest) -> HttpResponse:
        """The object-tools buttons: an order for every breaker, reported or not."""
        if request.method != "POST" or not self.has_command_permission(request):
            raise PermissionDenied
        action = request.POST.get("action")
        if action not in (BreakerCommand.FORCE_OPEN, BreakerCommand.RESET):
            raise PermissionDenied
        names = sorted(set(OPERATIONS) | set(BreakerReport.objects.values_list("breaker", flat=True)))
        send_command(request, action, names)
        return HttpResponseRedirect(reverse("admin:resilience_breakerreport_changelist"))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        orders.sync()  # report this process's breakers if due, so the list is never empty for no reason
        extra = {
            "recent_commands": BreakerCommand.objects.all()[:5],
            "can_command": self.has_command_permission(request),
            "stale_after": BreakerReport.STALE_SECONDS,
            "force_open_action": BreakerCommand.FORCE_OPEN,
            "reset_action": BreakerCommand.RESET,
        }
        return super().changelist_view(request, {**extra, **(extra_context or {})})


@admin.register(BreakerCommand)
class BreakerCommandAdmin(admin.ModelAdmin):
    """The orders given, as an audit trail (they are given from the breaker list)."""

    list_display = ["created_at", "action", "breaker", "requested_by"]
    list_filter = ["action", "breaker"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
