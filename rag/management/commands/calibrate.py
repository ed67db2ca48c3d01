from __future__ import annotations

import json
from typing import Any

from django.core.management.base import CommandError, CommandParser

from rag import calibration, declining
from rag.embeddings import get_embedder
from rag.management.base import RagCommand
from rag.management.golden_options import add_golden_set_options, load_golden_set
from rag.management.progress import Progress
from resilience.errors import OllamaError


class Command(RagCommand):
    help = (
        "Choose the relevance floors below which answers say the documents do not cover a question, from a "
        "golden set with answerable and unanswerable questions (use the tuning half, never the set you report). "
        "Prints the trade-off the set allows, the current floors' figures and the recommended ones, with the "
        "environment variables that set them; the last line is JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_golden_set_options(parser)
        parser.add_argument(
            "--min-precision",
            type=float,
            default=0.95,
            help="The share of declined questions that must be unanswerable ones (default 0.95: aim above "
            "what you need, floors chosen on a few dozen questions come out lower on new ones).",
        )
        parser.add_argument("--no-progress", action="store_true", help="No progress bar, even on a terminal.")

    def handle(
        self, *args, golden_set: str | None, collection: str | None, k: int, min_precision: float, **options: Any
    ) -> str:
        collection = collection or "default"
        if not 0.0 < min_precision <= 1.0:
            raise CommandError("--min-precision must be above 0 and at most 1.")
        set_name, questions = load_golden_set(golden_set, collection, k)
        try:
            calibration.check(questions)
        except calibration.CalibrationError as exc:
            raise CommandError(str(exc)) from None
        model = get_embedder().name
        try:
            with Progress(self, options, total=len(questions), unit="question", desc="calibrate") as progress:
                found = calibration.signals(questions, collection_name=collection, k=k, progress=progress.advance)
        except calibration.CalibrationError as exc:
            raise CommandError(str(exc)) from None
        except OllamaError as exc:
            raise CommandError(f"The embedding model {model!r} cannot be reached: {exc}") from None

        current_floors = declining.floors(model)
        current = (
            calibration.outcome(found, floor=current_floors[0], floor_unknown_words=current_floors[1])
            if current_floors
            else None
        )
        chosen = calibration.recommend(found, min_precision=min_precision)
        self._report(found, model, current, chosen, min_precision)
        line = {
            "set": set_name,
            "collection": collection,
            "k": k,
            "embedding_model": model,
            "questions": len(found),
            "unanswerable": sum(not s.answerable for s in found),
            "min_precision": min_precision,
            "current": current.as_dict() if current else None,
            "recommended": chosen.as_dict() if chosen else None,
        }
        return json.dumps(line)

    def _report(
        self,
        found: list[calibration.Signal],
        model: str,
        current: calibration.Outcome | None,
        chosen: calibration.Outcome | None,
        min_precision: float,
    ) -> None:
        write = self.stdout.write
        unanswerable = sum(not s.answerable for s in found)
        write(f"{len(found)} questions ({unanswerable} unanswerable), embedding model {model}")
        write("")
        write(
            f"{'floor':>6}  {'with unknown words':>18}  {'declined':>8}  {'answerable':>10}  {'precision':>9}  recall"
        )
        for row in calibration.frontier(found):
            write(self._row(row))
        write("")
        if current is None:
            write("current floors: none for this model (it declines nothing)")
        else:
            write("current floors:")
            write(self._row(current))
        if chosen is None:
            write(f"recommended: no floors decline an unanswerable question at precision {min_precision:.0%} or better")
            return
        write(f"recommended (precision {min_precision:.0%} or better, the most unanswerable questions declined):")
        write(self._row(chosen))
        write(f"  RAGSITE_RELEVANCE_FLOOR={chosen.floor:.3f}")
        write(f"  RAGSITE_RELEVANCE_FLOOR_UNKNOWN_WORDS={chosen.floor_unknown_words:.3f}")
        if unanswerable < 20:
            write(f"  (from {unanswerable} unanswerable questions: each one moves recall by {1 / unanswerable:.0%})")

    @staticmethod
    def _row(row: calibration.Outcome) -> str:
        precision = "-" if row.precision is None else f"{row.precision:.1%}"
        return (
            f"{row.floor:>6.3f}  {row.floor_unknown_words:>18.3f}  {row.right + row.wrong:>8}  "
            f"{row.wrong:>10}  {precision:>9}  {row.recall:.1%}"
        )
