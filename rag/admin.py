"""The admin of collections, documents, the query log, jobs and the answer cache (API keys:
rag.admin_access).

Documents are written by ingestion only: the admin lists them, re-ingests file-backed ones and
deletes through ``rag.ingestion`` so the collection's corpus version moves and stale cached answers
are never served.

Staff who are not superusers see only what rag.visibility lets them read: the collections, their
documents, the query log, the jobs and the cached answers of collections they may read. A
collection's visibility and groups are kept in its history as old -> new values.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, F, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

from rag import cache_counters, ingestion, jobs, sources, visibility
from rag.admin_access import CollectionForm, ValuesInHistory, caller_of
from rag.collections import delete_collection
from rag.models import CachedAnswer, Chunk, Collection, Document, Job, JobStatus, QueryLog
from resilience import config


def _chunk_count(**filters: Any) -> Subquery:
    counts = Chunk.objects.filter(**filters).order_by().values(*filters).annotate(n=Count("id")).values("n")
    return Subquery(counts, output_field=IntegerField())


@admin.register(Collection)
class CollectionAdmin(ValuesInHistory):
    list_display = [
        "name",
        "visibility",
        "group_names",
        "document_count",
        "chunk_count",
        "embedding_models",
        "corpus_version",
    ]
    list_filter = ["visibility"]
    search_fields = ["name", "description"]
    fields = ["name", "description", "visibility", "groups", "corpus_version", "created_at"]
    readonly_fields = ["corpus_version", "created_at"]
    filter_horizontal = ["groups"]
    form = CollectionForm

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})  # a class per request: no shared state

    def get_queryset(self, request: HttpRequest) -> QuerySet[Collection]:
        return (
            visibility.readable(caller_of(request))
            .prefetch_related("groups")
            .annotate(documents_n=Count("documents"), chunks_n=_chunk_count(collection=OuterRef("pk")))
        )

    def delete_model(self, request: HttpRequest, obj: Collection) -> None:
        delete_collection(collection=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Collection]) -> None:
        for collection in queryset:
            delete_collection(collection=collection)

    @admin.display(description="groups")
    def group_names(self, obj: Collection) -> str:
        return ", ".join(sorted(group.name for group in obj.groups.all())) or "—"

    @admin.display(description="documents", ordering="documents_n")
    def document_count(self, obj: Collection) -> int:
        return obj.documents_n  # type: ignore[attr-defined]

    @admin.display(description="chunks", ordering="chunks_n")
    def chunk_count(self, obj: Collection) -> int:
        return obj.chunks_n or 0  # type: ignore[attr-defined]

    @admin.display(description="embedded by")
    def embedding_models(self, obj: Collection) -> str:
        models = Chunk.objects.filter(collection=obj).values_list("embedding_model", flat=True).distinct()
        return ", ".join(sorted(models)) or "—"


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ["title", "collection", "source", "media_type", "chunk_count", "size_bytes", "updated_at"]
    list_filter = [("collection", admin.RelatedOnlyFieldListFilter), "media_type"]
    search_fields = ["title", "source"]
    list_select_related = ["collection"]
    actions = ["reingest"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Document]:
        documents = visibility.documents(caller_of(request))
        return documents.annotate(chunks_n=_chunk_count(document=OuterRef("pk")))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Text and title live in the chunks and their vectors: changes come through ingestion.
        return [f.name for f in Document._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="chunks", ordering="chunks_n")
    def chunk_count(self, obj: Document) -> int:
        return obj.chunks_n or 0  # type: ignore[attr-defined]

    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        ingestion.delete_document(document=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        for document in queryset.select_related("collection"):
            ingestion.delete_document(document=document)

    @admin.action(description="Re-ingest selected documents from their files", permissions=["change"])
    def reingest(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        """Queue each file-backed document's file again: a worker replaces changed files, skips unchanged.

        Only files inside RAGSITE_DOCUMENT_ROOTS are read; documents sent through the API never are.
        """
        by_collection: dict[str, list[Document]] = defaultdict(list)
        skipped = 0
        for document in queryset.select_related("collection"):
            if document.file_root:
                by_collection[document.collection.name].append(document)
            else:
                skipped += 1
        queued = [
            job
            for name, documents in sorted(by_collection.items())
            for job in jobs.queue_items(sources.reingest_items(documents), collection_name=name)
        ]
        if queued:
            failed = [job for job in queued if job.status == JobStatus.FAILED]
            failures = "".join(f" {job.source}: {job.reason}." for job in failed)
            self.message_user(
                request,
                f"Queued {len(queued) - len(failed)} document(s) for re-ingestion: see Jobs.{failures}",
                messages.ERROR if failed else messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                f"{skipped} document(s) skipped: not read from a file (sent through the API).",
                messages.WARNING,
            )


@admin.register(QueryLog)
class QueryLogAdmin(admin.ModelAdmin):
    list_display = ["created_at", "short_question", "collection", "cache", "degraded", "latency_ms"]
    list_filter = ["cache", "degraded", "collection"]
    search_fields = ["question"]
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[QueryLog]:
        return visibility.tagged(caller_of(request), super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="question", ordering="question")
    def short_question(self, obj: QueryLog) -> str:
        return obj.question if len(obj.question) <= 80 else obj.question[:79] + "…"


# JOBS

STATUS_COLOURS = {"queued": "#555", "running": "#1565c0", "done": "#2e7d32", "failed": "#c62828", "cancelled": "#888"}


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Background jobs: what each is doing, how far it got, why it failed; retry and cancel."""

    list_display = [
        "id",
        "kind",
        "collection",
        "short_source",
        "status_badge",
        "progress",
        "attempts",
        "short_reason",
        "created_at",
        "took",
    ]
    list_filter = ["status", "kind", "collection"]
    search_fields = ["source", "collection", "reason"]
    actions = ["retry", "cancel"]
    exclude = ["params"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return visibility.jobs(caller_of(request)) & super().get_queryset(request)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Job._meta.fields if f.name != "params"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a job changes through the queue; actions retry and cancel it

    def has_queue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("rag.change_job")

    @admin.display(description="source", ordering="source")
    def short_source(self, obj: Job) -> str:
        return obj.source if len(obj.source) <= 60 else "…" + obj.source[-59:]

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Job) -> str:
        return format_html('<strong style="color: {}">{}</strong>', STATUS_COLOURS.get(obj.status, "#555"), obj.status)

    @admin.display(description="progress")
    def progress(self, obj: Job) -> str:
        if obj.total is None:
            return "—"
        unit = "questions" if obj.kind == "warm_cache" else "chunks"
        share = f" ({100 * obj.done // obj.total} %)" if obj.total else ""
        return f"{obj.done} / {obj.total} {unit}{share}"

    @admin.display(description="reason")
    def short_reason(self, obj: Job) -> str:
        return obj.reason if len(obj.reason) <= 100 else obj.reason[:99] + "…"

    @admin.display(description="took")
    def took(self, obj: Job) -> str:
        if obj.started_at is None:
            return "—"
        return timesince(obj.started_at, obj.finished_at or timezone.now())

    @admin.action(description="Retry the selected failed or cancelled jobs", permissions=["queue"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        retried = [jobs.retry_job(job=job) for job in queryset if jobs.can_retry(job)]
        left = queryset.count() - len(retried)
        note = f"; {left} could not be (not failed or cancelled, or the upload is gone)" if left else ""
        self.message_user(
            request, f"Queued {len(retried)} job(s) again{note}.", messages.WARNING if left else messages.SUCCESS
        )

    @admin.action(description="Cancel the selected queued jobs", permissions=["queue"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        cancelled = 0
        for job in queryset.filter(status=JobStatus.QUEUED):
            try:
                jobs.cancel_job(job=job)
                cancelled += 1
            except jobs.JobConflict:
                pass
        left = queryset.count() - cancelled
        note = f"; {left} had started or finished already" if left else ""
        self.message_user(
            request, f"Cancelled {cancelled} job(s){note}.", messages.WARNING if left else messages.SUCCESS
        )


# THE ANSWER CACHE


@admin.register(CachedAnswer)
class CachedAnswerAdmin(admin.ModelAdmin):
    list_display = ["short_question", "collection_names", "hit_count", "last_hit", "age", "expires"]
    list_filter = ["generation", "embedding_model"]
    search_fields = ["question", "answer"]
    date_hierarchy = "created_at"
    change_list_template = "admin/rag/cachedanswer/change_list.html"
    exclude = ["embedding"]

    def visible(self, request: HttpRequest) -> QuerySet[CachedAnswer]:
        """The entries this user sees, deletes and flushes: those of collections they may read."""
        return visibility.tagged(caller_of(request), super().get_queryset(request))

    def get_queryset(self, request: HttpRequest) -> QuerySet[CachedAnswer]:
        entries = self.visible(request)
        names = RawSQL(
            f"SELECT string_agg(c.name, ',' ORDER BY c.name) FROM {Collection._meta.db_table} c "
            f"WHERE c.id = ANY({CachedAnswer._meta.db_table}.collection_ids)",
            [],
        )
        return entries.annotate(
            hit_count=Coalesce("usage__hits", 0), last_hit=F("usage__last_hit_at"), collection_names=names
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="question", ordering="question")
    def short_question(self, obj: CachedAnswer) -> str:
        return obj.question if len(obj.question) <= 80 else obj.question[:79] + "…"

    @admin.display(description="collections", ordering="collection_names")
    def collection_names(self, obj: CachedAnswer) -> str:
        return obj.collection_names or "(deleted)"  # type: ignore[attr-defined]

    @admin.display(description="hits", ordering="hit_count")
    def hit_count(self, obj: CachedAnswer) -> int:
        return obj.hit_count  # type: ignore[attr-defined]

    @admin.display(description="last hit", ordering="last_hit")
    def last_hit(self, obj: CachedAnswer) -> str:
        return f"{timesince(obj.last_hit)} ago" if obj.last_hit else "—"  # type: ignore[attr-defined]

    @admin.display(description="age", ordering="-created_at")
    def age(self, obj: CachedAnswer) -> str:
        return timesince(obj.created_at)

    @admin.display(description="expires", ordering="created_at")
    def expires(self, obj: CachedAnswer) -> str:
        expiry = obj.created_at + timedelta(seconds=config.current().cache.ttl_seconds)
        if expiry <= timezone.now():
            return f"expired {timesince(expiry)} ago"
        return f"in {timesince(timezone.now(), expiry)}"

    def get_urls(self) -> list[URLPattern]:
        return [
            path("flush/", self.admin_site.admin_view(self.flush_view), name="rag_cachedanswer_flush"),
            *super().get_urls(),
        ]

    def flush_view(self, request: HttpRequest) -> HttpResponse:
        """Ask, then delete every cached answer this user may see: all of them for a superuser, the
        answers of collections they may read for other staff (the counters and the embedding cache
        stay)."""
        if not self.has_delete_permission(request):
            raise PermissionDenied
        changelist = reverse("admin:rag_cachedanswer_changelist")
        everything = request.user.is_superuser
        entries = self.visible(request)
        if request.method == "POST":
            _, deleted = entries.delete()
            count = deleted.get(CachedAnswer._meta.label, 0)
            scope = "the semantic cache" if everything else "the cached answers of the collections you may read"
            messages.success(request, f"Flushed {scope}: {count} answers deleted.")
            return HttpResponseRedirect(changelist)
        context = {
            **self.admin_site.each_context(request),
            "title": "Flush the semantic cache?" if everything else "Flush your collections' cached answers?",
            "opts": self.model._meta,
            "entries": entries.count(),
            "changelist_url": changelist,
        }
        return TemplateResponse(request, "admin/rag/cachedanswer/flush.html", context)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {"cache_stats": cache_counters.stats(), "can_flush": self.has_delete_permission(request)}
        return super().changelist_view(request, {**extra, **(extra_context or {})})


from rag import admin_quality  # noqa: E402,F401  (evaluation runs and feedback)
