from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from rag import evaluation, feedback
from rag.management.base import RagCommand
from rag.management.golden_options import add_golden_set_options, load_golden_set
from rag.management.progress import Progress
from rag.models import Collection, EvalRun
from rag.sources import printable

# A run id: ASCII digits ("²".isdigit() is true too), few enough for a bigint.
RUN_ID = re.compile(r"[0-9]{1,18}")


class Command(RagCommand):
    help = (
        "Ask a golden set's questions through the answer service (no answer cache) and report hit@1, hit@5, "
        "MRR, nDCG@10, how well unanswerable questions are declined, and latency: per question, overall, and "
        "as one JSON line at the end. Each run is stored; --compare shows what changed against an earlier one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_golden_set_options(parser)
        parser.add_argument("--label", default="", help="A note stored with the run: what changed.")
        parser.add_argument(
            "--compare",
            metavar="RUN",
            help="An earlier run's id, or 'previous' (the last run of the same set and collection).",
        )
        parser.add_argument(
            "--export-feedback",
            metavar="PATH",
            type=Path,
            help="Instead of evaluating: write the thumbs-down questions an operator has judged in the admin "
            "(expected source, or not answerable) as golden-set lines to PATH (limited to --collection if given).",
        )
        parser.add_argument(
            "--force", action="store_true", help="With --export-feedback: replace PATH if it already exists."
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar, even on a terminal.")

    def handle(
        self,
        *args,
        golden_set: str | None,
        collection: str | None,
        k: int,
        label: str,
        compare: str | None,
        export_feedback: Path | None,
        force: bool,
        **options: Any,
    ) -> str:
        if export_feedback is not None:
            return self._export(export_feedback, collection, force=force)
        if force:
            raise CommandError("--force goes with --export-feedback.")
        collection = collection or "default"
        set_name, questions = load_golden_set(golden_set, collection, k)
        baseline = self._baseline(compare, set_name, collection)

        with Progress(self, options, total=len(questions), unit="question", desc="evaluate") as progress:
            result = evaluation.evaluate(
                questions=questions,
                set_name=set_name,
                collection_name=collection,
                k=k,
                label=label,
                progress=lambda _: progress.advance(),
            )
        verbosity = options.get("verbosity", 1)
        if verbosity >= 1:
            self._per_question(result.results)
        self._overall(result)
        if baseline is not None:
            self._compare(baseline, result.results)
        assert result.run is not None
        line = {"run": result.run.pk, "set": set_name, "collection": collection, "k": k, **result.summary}
        return json.dumps(line)

    def _export(self, path: Path, collection: str | None, *, force: bool) -> str:
        if collection and not Collection.objects.filter(name=collection).exists():
            raise CommandError(f"No collection named {collection!r}.")
        if path.exists() and not force:
            raise CommandError(f"{path} already exists: give --force to replace it.")
        try:
            written, unjudged = feedback.export_feedback(path, collection=collection)
        except OSError as exc:
            raise CommandError(f"Cannot write {path}: {exc.strerror or exc}") from None
        note = (
            f"; {unjudged} thumbs-down question(s) left out until an operator judges them in the admin"
            if unjudged
            else ""
        )
        return f"Wrote {written} golden-set line(s) to {printable(str(path))}{note}."

    def _baseline(self, compare: str | None, set_name: str, collection: str) -> EvalRun | None:
        if compare is None:
            return None
        runs = EvalRun.objects.filter(golden_set=set_name, collection=collection)
        if compare == "previous":
            run = runs.order_by("-created_at").first()
            if run is None:
                raise CommandError(f"No earlier run of {set_name!r} on {collection!r} to compare with.")
            return run
        if not RUN_ID.fullmatch(compare):
            raise CommandError("--compare takes a run id or 'previous'.")
        run = EvalRun.objects.filter(pk=int(compare)).first()
        if run is None:
            raise CommandError(f"No evaluation run #{compare}.")
        return run

    def _per_question(self, results: list[dict[str, Any]]) -> None:
        write = self.stdout.write
        write(f"{'rank':>4}  {'declined':<8}  {'ms':>6}  {'kind':<13} question")
        for r in results:
            rank = "-" if not r["answerable"] else (str(r["rank"]) if r["rank"] else "miss")
            flag = "yes" if r["declined"] else "no"
            if r["declined"] == r["answerable"]:
                flag += " !"  # declined an answerable one, or answered an unanswerable one
            write(f"{rank:>4}  {flag:<8}  {r['ms']:>6.1f}  {r['kind'][:13]:<13} {r['question']}")
        write("")

    def _overall(self, result: evaluation.Evaluation) -> None:
        s = result.summary
        write = self.stdout.write

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value * 100:.1f} %"

        def ms(figures: dict[str, float | None]) -> str:
            p50, p95 = figures["p50"], figures["p95"]
            return "-" if p50 is None else f"{p50:.1f} / {p95:.1f} ms"

        write(
            f"Golden set {result.set_name!r} on {result.collection!r}, k={result.k}: {s['questions']} questions, "
            f"{s['answerable']} answerable, {s['unanswerable']} unanswerable"
        )
        rows = [
            ("hit@1", pct(s["hit@1"])),
            ("hit@5", pct(s["hit@5"])),
            ("MRR", "-" if s["mrr"] is None else f"{s['mrr']:.3f}"),
            (f"nDCG@{evaluation.NDCG_K}", "-" if s["ndcg@10"] is None else f"{s['ndcg@10']:.3f}"),
            ("declining precision", pct(s["decline_precision"])),
            ("declining recall", pct(s["decline_recall"])),
            ("answer contains", pct(s["answer_contains"])),
            ("latency p50 / p95", ms(s["latency_ms"])),
            *((f"  {stage}", ms(figures)) for stage, figures in s["stages_ms"].items()),
        ]
        for name, value in rows:
            write(f"  {name:<22}{value:>20}")
        kinds = evaluation.by_kind(result.results)
        if len(kinds) > 1:
            write(f"  {'kind':<14}{'n':>4}{'hit@1':>9}{'hit@5':>9}{'MRR':>7}{'declined':>10}")
            for kind, k in kinds.items():
                mrr = "-" if k["mrr"] is None else f"{k['mrr']:.3f}"
                hits = f"{pct(k['hit@1']):>9}{pct(k['hit@5']):>9}"
                write(f"  {kind:<14}{k['questions']:>4}{hits}{mrr:>7}{k['declined']:>10}")

    def _compare(self, baseline: EvalRun, results: list[dict[str, Any]]) -> None:
        better, worse = evaluation.compare(baseline.results, results)
        note = f" ({baseline.label})" if baseline.label else ""
        self.stdout.write(f"Compared with run #{baseline.pk}{note}: {len(better)} better, {len(worse)} worse")
        for title, pairs in (("worse", worse), ("better", better)):
            for old, new in pairs:
                self.stdout.write(
                    f"  {title}: {new['question']}: {evaluation.describe(old)} -> {evaluation.describe(new)}"
                )
