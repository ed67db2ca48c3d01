"""The options and checks ``evaluate`` and ``calibrate`` share: a golden set asked of a collection."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from rag import golden
from rag.models import Collection


def add_golden_set_options(parser: CommandParser) -> None:
    parser.add_argument(
        "--set",
        dest="golden_set",
        help=f"A golden set: a JSONL file, or a shipped set's name ({', '.join(golden.shipped_sets())}).",
    )
    parser.add_argument("--collection", default=None, help="Collection to ask (default: default).")
    parser.add_argument(
        "--k",
        type=int,
        default=10,
        help="Sources asked per question (default 10, so nDCG@10 sees ten; hit@1 and hit@5 read the first).",
    )


def load_golden_set(golden_set: str | None, collection: str, k: int) -> tuple[str, list[golden.GoldenQuestion]]:
    """The set's name and questions; CommandError saying what is wrong with the options."""
    if not golden_set:
        raise CommandError("Give --set: a JSONL file or a shipped set's name.")
    if not 1 <= k <= 50:
        raise CommandError("--k must be between 1 and 50.")
    try:
        set_name, questions = golden.load(golden_set)
    except golden.GoldenSetError as exc:
        raise CommandError(str(exc)) from None
    if not Collection.objects.filter(name=collection).exists():
        raise CommandError(f"No collection named {collection!r}.")
    return set_name, questions
