"""``python -m bench cache``, part 3: hit and false-hit rates of a paraphrase workload by threshold."""

from __future__ import annotations

from typing import Any

import numpy as np

WORKLOAD: list[tuple[str, list[str], list[str]]] = [
    # (base question, paraphrases that should hit it, near misses that must not hit anything)
    (
        "What does the yield statement do?",
        ["How does the yield statement work?", "What is the purpose of the yield statement?", "Explain yield."],
        ["What does the return statement do?", "What does the yield from statement do?"],
    ),
    (
        "What is a lambda expression?",
        ["What are lambda expressions?", "Explain lambda expressions", "What is a lambda expression used for?"],
        ["What is a generator expression?", "What is a conditional expression?"],
    ),
    (
        "What is allowed in a lambda?",
        ["What is allowed inside a lambda?", "what is allowed in a lambda"],
        ["What is not allowed in a lambda?"],
    ),
    (
        "How does the global statement work?",
        ["What does the global statement do?", "What is the global statement used for?"],
        ["How does the return statement work?"],
    ),
    (
        "How do I raise an exception?",
        ["How can I raise an exception?", "How to raise exceptions?"],
        ["How do I catch an exception?", "How do I re-raise an exception?"],
    ),
    (
        "What does the with statement do?",
        ["What is the with statement used for?", "How does the with statement work?"],
        ["What does the while statement do?"],
    ),
    (
        "How does the break statement work?",
        ["What does the break statement do?"],
        ["How does the continue statement work?"],
    ),
    (
        "What does the del statement do?",
        ["What is the purpose of the del statement?", "What does del do?"],
        ["What does the try statement do?"],
    ),
    (
        "What is the difference between is and ==?",
        ["What's the difference between is and ==?"],
        ["What is the difference between is and !=?", "What is the difference between == and !=?"],
    ),
    (
        "How are floating point numbers represented?",
        ["How are floating-point numbers represented?"],
        ["How are integer numbers represented?", "How are complex numbers represented?"],
    ),
    (
        "What does the assert statement do?",
        ["How does the assert statement work?", "What is the assert statement used for?"],
        ["What does the assert statement not do?"],
    ),
    (
        "How do I define a class?",
        ["How can I define a class?", "How to define classes?"],
        ["How do I define a function?"],
    ),
    (
        "What are the rules for operator precedence?",
        ["What are the operator precedence rules?"],
        ["What are the rules for name binding?"],
    ),
    (
        "How does the import statement work?",
        ["What does the import statement do?", "Explain the import statement"],
        ["How does the from import statement work?"],
    ),
    (
        "What is a decorator?",
        ["What are decorators?", "Explain decorators"],
        ["What is a context manager?"],
    ),
    (
        "How do f-strings work?",
        ["How do formatted string literals work?", "How do f-strings work in Python?"],
        ["How do byte strings work?"],
    ),
    (
        "What happens when a function has no return statement?",
        ["What happens if a function has no return statement?"],
        ["What happens when a function has a return statement?"],
    ),
    (
        "How many arguments can a function take?",
        ["How many arguments can a function accept?"],
        ["How many arguments can a lambda take?", "How many arguments can a function take in Python 2?"],
    ),
    (
        "What does the nonlocal statement do?",
        ["What is the nonlocal statement used for?"],
        ["What does the if statement do?"],
    ),
    (
        "How does a for loop work?",
        ["How do for loops work?"],
        ["How does a while loop work?"],
    ),
    (
        "What is the else clause of a loop for?",
        ["What is the purpose of the else clause on a loop?"],
        ["What is the else clause of an if statement for?"],
    ),
    (
        "Which values are false in Python?",
        ["Which values are considered false in Python?"],
        ["Which values are true in Python?"],
    ),
    (
        "What does the pass statement do?",
        ["What is the pass statement for?"],
        ["What does the continue statement do?"],
    ),
    (
        "What is a coroutine?",
        ["What are coroutines?"],
        ["What is a generator?"],
    ),
]
THRESHOLDS = (0.90, 0.92, 0.95)


def workload_benchmark(pid: int, embedder: Any) -> dict[str, dict[str, float]]:
    from rag import answer_cache as cache
    from rag.models import Collection
    from rag.visibility import OPERATOR, resolve
    from resilience import config

    collection = Collection.objects.create(name=f"bench-cache-{pid}-workload")
    scope = cache.Scope.for_query(resolve(OPERATOR, [collection.name]), embedding_model=embedder.name, k=5)
    bases = [b for b, _, _ in WORKLOAD]
    base_vectors = embedder.embed(bases)
    for question, vector in zip(bases, base_vectors, strict=True):
        cache.store(scope, question, vector, f"answer to {question}", [], "extractive")
    paraphrases = [(p, b) for b, ps, _ in WORKLOAD for p in ps]
    near_misses = [n for _, _, ns in WORKLOAD for n in ns]
    p_vectors = embedder.embed([p for p, _ in paraphrases])
    n_vectors = embedder.embed(near_misses)
    answer_of = {f"answer to {b}": b for b in bases}
    base_matrix = np.asarray(base_vectors)

    def guarded(question: str, vector: np.ndarray) -> str | None:
        hit = cache.lookup_exact(scope, question) or cache.lookup_semantic(scope, question, vector)
        return answer_of[hit.answer] if hit else None

    def similarity_only(vector: np.ndarray, threshold: float) -> str | None:
        sims = base_matrix @ vector
        best = int(np.argmax(sims))
        return bases[best] if sims[best] >= threshold else None

    table: dict[str, dict[str, float]] = {}
    base_cfg = config.current()
    print(
        f"{len(bases)} cached questions, {len(paraphrases)} paraphrases that should hit, "
        f"{len(near_misses)} near misses that must not"
    )
    print(
        f"{'threshold':>9} | {'guard: para hit':>15} {'wrong':>5} {'near-miss hit':>13} | "
        f"{'similarity only: para hit':>25} {'wrong':>5} {'near-miss hit':>13}"
    )
    try:
        for threshold in THRESHOLDS:
            config.override(config.replace(base_cfg, cache={"similarity_threshold": threshold}))
            row: dict[str, float] = {}
            for mode in ("guard", "similarity"):
                right = wrong = false = 0
                for (question, base), vector in zip(paraphrases, p_vectors, strict=True):
                    got = guarded(question, vector) if mode == "guard" else similarity_only(vector, threshold)
                    right += got == base
                    wrong += got is not None and got != base
                for question, vector in zip(near_misses, n_vectors, strict=True):
                    got = guarded(question, vector) if mode == "guard" else similarity_only(vector, threshold)
                    false += got is not None
                row[f"{mode}_paraphrase_hit_rate"] = right / len(paraphrases)
                row[f"{mode}_paraphrase_wrong_hits"] = wrong
                row[f"{mode}_near_miss_false_hit_rate"] = false / len(near_misses)
            table[f"{threshold:.2f}"] = row
            print(
                f"{threshold:>9.2f} | {row['guard_paraphrase_hit_rate']:>15.0%} {row['guard_paraphrase_wrong_hits']:>5}"
                f" {row['guard_near_miss_false_hit_rate']:>13.0%} | {row['similarity_paraphrase_hit_rate']:>25.0%}"
                f" {row['similarity_paraphrase_wrong_hits']:>5} {row['similarity_near_miss_false_hit_rate']:>13.0%}"
            )
        config.override(config.replace(base_cfg, cache={"similarity_threshold": THRESHOLDS[0]}))
        leaks = [n for n, v in zip(near_misses, n_vectors, strict=True) if guarded(n, v) is not None]
        if leaks:
            print(f"near misses the guard lets through at {THRESHOLDS[0]:.2f}: {leaks}")
    finally:
        config.override(base_cfg)
    Collection.objects.filter(pk=collection.pk).delete()
    return table
