"""The admin of answer quality: evaluation runs (with a chart over time and the questions that got
worse) and the feedback of the people asking (an operator names the document that should have
answered, for manage.py evaluate --export-feedback). Staff who are not superusers see the runs and
the feedback of collections they may read only (rag.visibility)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html, format_html_join

from rag import evaluation, visibility
from rag.admin_access import visible_keys
from rag.models import EvalRun, Feedback, QueryLog

CHART_WIDTH, CHART_HEIGHT = 600, 140
SERIES = (("hit@1", "hit1"), ("hit@5", "hit5"), ("mrr", "mrr"))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def chart(runs: list[EvalRun]) -> dict[str, Any]:
    """Polylines of hit@1, hit@5 and MRR over runs (oldest first), on a 0..1 scale."""
    runs = sorted(runs, key=lambda r: r.created_at)
    step = CHART_WIDTH / max(len(runs), 1)
    lines = []
    for name, css in SERIES:
        points = [
            (
                f"{i * step + step / 2:.1f}",
                f"{CHART_HEIGHT - CHART_HEIGHT * run.summary[name]:.1f}",
                run,
                run.summary[name],
            )
            for i, run in enumerate(runs)
            if run.summary.get(name) is not None
        ]
        lines.append(
            {
                "name": name,
                "css": css,
                "points": " ".join(f"{x},{y}" for x, y, _, _ in points),
                "dots": [(x, y, f"#{run.pk} {run.golden_set}: {name} {value:.3f}") for x, y, run, value in points],
            }
        )
    return {"width": CHART_WIDTH, "height": CHART_HEIGHT, "lines": lines, "runs": len(runs)}


@admin.register(EvalRun)
class EvalRunAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "golden_set",
        "collection",
        "label",
        "hit_1",
        "hit_5",
        "mrr",
        "declining",
        "latency",
        "worse_than_previous",
    ]
    list_filter = ["golden_set", "collection"]
    search_fields = ["label", "golden_set"]
    date_hierarchy = "created_at"
    change_list_template = "admin/rag/evalrun/change_list.html"
    fields = ["created_at", "golden_set", "collection", "k", "label", "figures", "regressed", "settings"]
    readonly_fields = ["created_at", "golden_set", "collection", "k", "figures", "regressed", "settings"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[EvalRun]:
        caller = visibility.Caller.for_user(request.user)
        runs = super().get_queryset(request)
        return runs if caller.everything else runs.filter(collection__in=visibility.readable(caller).values("name"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs come from manage.py evaluate

    @admin.display(description="hit@1")
    def hit_1(self, run: EvalRun) -> str:
        return _percent(run.figure("hit@1"))

    @admin.display(description="hit@5")
    def hit_5(self, run: EvalRun) -> str:
        return _percent(run.figure("hit@5"))

    @admin.display(description="MRR")
    def mrr(self, run: EvalRun) -> str:
        value = run.figure("mrr")
        return "-" if value is None else f"{value:.3f}"

    @admin.display(description="declining P / R")
    def declining(self, run: EvalRun) -> str:
        return f"{_percent(run.figure('decline_precision'))} / {_percent(run.figure('decline_recall'))}"

    @admin.display(description="p50 / p95")
    def latency(self, run: EvalRun) -> str:
        figures = run.summary.get("latency_ms") or {}
        if figures.get("p50") is None:
            return "-"
        return f"{figures['p50']:.0f} / {figures['p95']:.0f} ms"

    @admin.display(description="worse than the run before")
    def worse_than_previous(self, run: EvalRun) -> str:
        previous = run.previous()
        if previous is None:
            return "-"
        return str(len(evaluation.compare(previous.results, run.results)[1]))

    @admin.display(description="figures")
    def figures(self, run: EvalRun) -> str:
        s = run.summary
        rows = [
            ("questions", f"{s['questions']} ({s['answerable']} answerable, {s['unanswerable']} unanswerable)"),
            ("hit@1 / hit@5", f"{_percent(s['hit@1'])} / {_percent(s['hit@5'])}"),
            ("MRR / nDCG@10", f"{s['mrr']} / {s['ndcg@10']}"),
            ("declining precision / recall", self.declining(run)),
            ("latency p50 / p95", self.latency(run)),
        ]
        return format_html("<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))

    @admin.display(description="questions that got worse")
    def regressed(self, run: EvalRun) -> str:
        previous = run.previous()
        if previous is None:
            return "No earlier run of this set on this collection."
        worse = evaluation.compare(previous.results, run.results)[1]
        if not worse:
            return f"None, against run #{previous.pk}."
        rows = [(new["question"], evaluation.describe(old), evaluation.describe(new)) for old, new in worse]
        return format_html(
            "<p>Against run #{}:</p><table id='regressed'>"
            "<tr><th>question</th><th>before</th><th>now</th></tr>{}</table>",
            previous.pk,
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context is not None and "cl" in context:
            context["chart"] = chart(list(context["cl"].queryset.order_by("-created_at")[:60]))
        return response


class EvictedFilter(admin.SimpleListFilter):
    title = "evicted a cached answer"
    parameter_name = "evicted"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "yes"), ("no", "no")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Feedback]) -> QuerySet[Feedback]:
        if self.value() == "yes":
            return queryset.filter(evicted__gt=0)
        if self.value() == "no":
            return queryset.filter(evicted=0)
        return queryset


@admin.register(Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "rating",
        "question",
        "collection",
        "comment",
        "who",
        "evicted",
        "expected_source",
        "not_answerable",
    ]
    list_editable = ["expected_source", "not_answerable"]
    list_filter = ["rating", EvictedFilter, "query__collection", "not_answerable"]
    search_fields = ["query__question", "comment", "expected_source"]
    list_select_related = ["query", "user", "api_key"]
    date_hierarchy = "created_at"
    fields = ["question", "answer_info", "rating", "comment", "who", "evicted", "expected_source", "not_answerable"]
    readonly_fields = ["question", "answer_info", "rating", "comment", "who", "evicted"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Feedback]:
        visible = visibility.tagged(visibility.Caller.for_user(request.user), QueryLog.objects.all())
        # A question of a public collection may come with another team's key: its name is shown
        # only to those who may see the key.
        keys = visible_keys(request).filter(pk=OuterRef("api_key_id"))
        return super().get_queryset(request).filter(query__in=visible).annotate(key_shown=Exists(keys))

    def get_list_filter(self, request: HttpRequest) -> list[Any]:
        # Django lists that filter's choices from every query logged, not from this list's rows.
        if visibility.Caller.for_user(request.user).everything:
            return self.list_filter
        return [f for f in self.list_filter if f != "query__collection"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="question", ordering="query__question")
    def question(self, feedback: Feedback) -> str:
        return feedback.query.question

    @admin.display(description="collection", ordering="query__collection")
    def collection(self, feedback: Feedback) -> str:
        return feedback.query.collection

    @admin.display(description="answer")
    def answer_info(self, feedback: Feedback) -> str:
        log = feedback.query
        covered = "answered" if log.answerable else "declined (not in the documents)"
        return f"{covered}; cache {log.cache}; {log.latency_ms:.0f} ms; asked {log.created_at:%Y-%m-%d %H:%M}"

    @admin.display(description="from")
    def who(self, feedback: Feedback) -> str:
        if feedback.user_id:
            return f"user {feedback.user}"
        if feedback.api_key_id:
            return f"key {feedback.api_key}" if getattr(feedback, "key_shown", True) else "an API key"
        return "anonymous"
