"""Answer quality, measured: a golden set asked through the answer service, scored and stored.

Each question goes through ``answer_question`` as the API would ask it with ``use_cache: false``
(no answer cache, and the question embedded by the model as a new question is), so the figures
are what users get. Per question: the rank of the first source that is an expected document,
whether the answer declined, and the time taken. Over the set:

- hit@1, hit@5: the share of answerable questions with an expected document first, in the top five;
- MRR: the mean of 1/rank (0 when no expected document is among the k sources);
- nDCG@10: any one expected document answers the question, so the gain is that of the first one
  found, 1/log2(rank + 1), and the ideal is 1;
- declining: precision (declined questions that were unanswerable) and recall (unanswerable
  questions that were declined);
- latency p50/p95 of the whole answer and of each stage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rag import golden
from rag.answers import Answer, answer_question
from rag.embeddings import get_embedder
from rag.generation import PROMPT_VERSION
from rag.models import EvalRun
from rag.visibility import OPERATOR
from resilience import config

HIT_KS = (1, 5)
NDCG_K = 10


# SCORING (pure)


def first_relevant_rank(sources: Sequence[dict[str, Any]], expected: Iterable[str]) -> int | None:
    """1-based rank of the first source whose document is expected (by source or title)."""
    wanted = {e.casefold() for e in expected}
    for rank, source in enumerate(sources, start=1):
        if source.get("source", "").casefold() in wanted or source.get("title", "").casefold() in wanted:
            return rank
    return None


def ndcg(rank: int | None, k: int = NDCG_K) -> float:
    return 1.0 / math.log2(rank + 1) if rank is not None and rank <= k else 0.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100): a value that was actually observed."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def contains_all(answer: str, needles: Sequence[str]) -> bool:
    folded = answer.casefold()
    return all(needle.casefold() in folded for needle in needles)


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The set's figures from its per-question results (see the module docstring)."""
    answerable = [r for r in results if r["answerable"]]
    unanswerable = [r for r in results if not r["answerable"]]
    declined = [r for r in results if r["declined"]]
    n = len(answerable)
    summary: dict[str, Any] = {"questions": len(results), "answerable": n, "unanswerable": len(unanswerable)}
    for k in HIT_KS:
        summary[f"hit@{k}"] = _ratio(sum(1 for r in answerable if r["rank"] is not None and r["rank"] <= k), n)
    summary["mrr"] = round(sum(1 / r["rank"] for r in answerable if r["rank"]) / n, 4) if n else None
    summary[f"ndcg@{NDCG_K}"] = round(sum(ndcg(r["rank"]) for r in answerable) / n, 4) if n else None
    summary["declined"] = len(declined)
    summary["decline_precision"] = _ratio(sum(1 for r in declined if not r["answerable"]), len(declined))
    summary["decline_recall"] = _ratio(sum(1 for r in unanswerable if r["declined"]), len(unanswerable))
    checked = [r for r in answerable if r.get("answer_ok") is not None]
    summary["answer_contains"] = _ratio(sum(1 for r in checked if r["answer_ok"]), len(checked))
    totals = [r["ms"] for r in results]
    summary["latency_ms"] = {"p50": percentile(totals, 50), "p95": percentile(totals, 95)}
    stages = sorted({stage for r in results for stage in r["timings"]} - {"total"})
    summary["stages_ms"] = {
        stage: {
            "p50": percentile([r["timings"][stage] for r in results if stage in r["timings"]], 50),
            "p95": percentile([r["timings"][stage] for r in results if stage in r["timings"]], 95),
        }
        for stage in stages
    }
    return summary


def by_kind(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = sorted({r["kind"] for r in results if r["kind"]})
    return {kind: summarise([r for r in results if r["kind"] == kind]) for kind in kinds}


# RUNNING


def declined(answer: Answer) -> bool:
    return not answer.answerable


def score_answer(item: golden.GoldenQuestion, answer: Answer) -> dict[str, Any]:
    sources = [chunk.as_source() for chunk in answer.sources]
    return {
        "question": item.question,
        "kind": item.kind,
        "answerable": item.answerable,
        "expected": list(item.expected),
        "rank": first_relevant_rank(sources, item.expected) if item.answerable else None,
        "sources": [s["source"] for s in sources],
        "declined": declined(answer),
        "answer_ok": contains_all(answer.answer, item.answer_contains) if item.answer_contains else None,
        "ms": answer.timings_ms.get("total", 0.0),
        "timings": dict(answer.timings_ms),
    }


def settings_snapshot() -> dict[str, Any]:
    """What the figures depend on besides the code: the models and the answer writer."""
    provider = config.current().provider
    generation = provider.generation_backend
    if generation == "ollama":
        generation = f"ollama/{provider.generation_model}"
    return {"embedding_model": get_embedder().name, "generation": generation, "prompt_version": PROMPT_VERSION}


@dataclass
class Evaluation:
    set_name: str
    collection: str
    k: int
    results: list[dict[str, Any]]
    summary: dict[str, Any]
    run: EvalRun | None = None


def evaluate(
    *,
    questions: Sequence[golden.GoldenQuestion],
    set_name: str,
    collection_name: str = "default",
    k: int = 10,
    label: str = "",
    store: bool = True,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> Evaluation:
    """Ask every question of a golden set, score the answers, and store the run.

    One question is asked first and not counted, so that loading the model and warming the
    database's caches do not land in the latency figures.
    """
    if questions:
        answer_question(
            question=questions[0].question,
            caller=OPERATOR,
            collection_name=collection_name,
            k=k,
            use_cache=False,
            log_query=False,
        )
    results = []
    for item in questions:
        answer = answer_question(
            question=item.question,
            caller=OPERATOR,  # run by an operator: any collection may be evaluated
            collection_name=collection_name,
            k=k,
            use_cache=False,
            log_query=False,
            embedding_cache=False,
        )
        results.append(score_answer(item, answer))
        if progress:
            progress(results[-1])
    summary = summarise(results)
    run = None
    if store:
        run = EvalRun.objects.create(
            golden_set=set_name,
            collection=collection_name,
            k=k,
            label=label,
            summary=summary,
            results=results,
            settings=settings_snapshot(),
        )
    return Evaluation(set_name, collection_name, k, results, summary, run)


# COMPARING RUNS


def _outcome(result: dict[str, Any]) -> tuple[int, float]:
    """Orders a question's results: right about declining first, then a better rank."""
    right = result["declined"] != result["answerable"]
    return (1 if right else 0, 1 / result["rank"] if result.get("rank") else 0.0)


def compare(
    before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]
) -> tuple[list[tuple[dict, dict]], list[tuple[dict, dict]]]:
    """Questions asked in both runs that got better and worse: (before, after) pairs."""
    earlier = {r["question"]: r for r in before}
    better, worse = [], []
    for result in after:
        old = earlier.get(result["question"])
        if old is None:
            continue
        if _outcome(result) > _outcome(old):
            better.append((old, result))
        elif _outcome(result) < _outcome(old):
            worse.append((old, result))
    return better, worse


def describe(result: dict[str, Any]) -> str:
    """A question's outcome in a few characters: its rank, or how it was declined."""
    if not result["answerable"]:
        return "declined" if result["declined"] else "answered (should decline)"
    rank = f"rank {result['rank']}" if result["rank"] else "not found"
    return f"{rank}, declined" if result["declined"] else rank
