"""The embedding cache: no text is embedded twice by the same model.

Vectors are keyed by the embedder's name and the text's hash, so an unchanged chunk of an edited
file, or a question asked again, costs no model call.

A question's vector is keyed by its text *and* the collections it was asked of (``question_key``):
were it keyed by its text alone, a question worded like a sentence of a restricted document, or
like another team's question, would come back without its ``embed`` stage, and faster, telling
anyone that those words are in a collection they may not read.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import connection

from rag.cache_counters import safely
from rag.models import CachedEmbedding
from rag.sql import lazily, lazy_commit, vector_literal
from rag.text import text_hash

logger = logging.getLogger(__name__)


def _load_embeddings(model: str, keys: list[str]) -> dict[str, np.ndarray]:
    rows = CachedEmbedding.objects.filter(model=model, text_hash__in=keys).values_list("text_hash", "embedding")
    return {key: np.asarray(vector, dtype=np.float32) for key, vector in rows}


def _save_embeddings(model: str, vectors: dict[str, np.ndarray]) -> None:
    if len(vectors) == 1:  # a question: one statement, where a transaction would take four
        (key, vector), *_ = vectors.items()
        with connection.cursor() as cursor:
            cursor.execute(
                lazily(
                    f"INSERT INTO {CachedEmbedding._meta.db_table} (model, text_hash, embedding, created_at) "
                    "VALUES (%s, %s, %s::vector, now()) ON CONFLICT DO NOTHING"
                ),
                [model, key, vector_literal(vector)],
            )
        return
    with lazy_commit():
        CachedEmbedding.objects.bulk_create(
            [CachedEmbedding(model=model, text_hash=key, embedding=vector) for key, vector in vectors.items()],
            ignore_conflicts=True,
        )


def embed_cached(embedder: Any, texts: list[str]) -> np.ndarray:
    """``embedder.embed(texts)``, asking the model only for texts it has not embedded before.

    Model errors propagate.
    """
    if not texts:
        return embedder.embed(texts)
    keys = [text_hash(t) for t in texts]
    found = safely("embedding lookup", _load_embeddings, embedder.name, sorted(set(keys)), default={})
    todo: dict[str, str] = {}
    for key, text in zip(keys, texts, strict=True):
        if key not in found:
            todo.setdefault(key, text)
    if todo:
        fresh = embedder.embed(list(todo.values()))
        new = dict(zip(todo, np.asarray(fresh, dtype=np.float32), strict=True))
        safely("embedding store", _save_embeddings, embedder.name, new, default=None)
        found.update(new)
    vectors = [found[key] for key in keys]
    if len({v.shape for v in vectors}) > 1:  # the model changed under the same name
        logger.warning("embedding cache: %s vectors of different dimensions; embedding afresh", embedder.name)
        return embedder.embed(texts)
    return np.stack(vectors)


def question_key(question: str, collection_ids: Sequence[int]) -> str:
    """The cache key of a question's vector asked of these collections (ids in ascending order)."""
    scoped = f"{text_hash(question)}:{','.join(map(str, collection_ids))}"
    return hashlib.sha256(scoped.encode("utf-8")).hexdigest()


# ``question_key`` in SQL: the first parameter is ``text_hash(question) + ":"``, and ``scope.ids``
# the collection ids in ascending order (rag.first_look).
QUESTION_KEY_SQL = "encode(sha256(convert_to(%s || array_to_string(scope.ids, ','), 'UTF8')), 'hex')"


def embed_question(embedder: Any, question: str, collection_ids: Sequence[int]) -> np.ndarray:
    """The model's vector for a question not cached for these collections, then cached for them
    when ``embedder`` is a caching one."""
    inner = embedder.inner if isinstance(embedder, CachingEmbedder) else None
    if inner is None:
        return embedder.embed([question])[0]
    vector = np.asarray(inner.embed([question]), dtype=np.float32)[0]
    key = question_key(question, collection_ids)
    safely("embedding store", _save_embeddings, embedder.name, {key: vector}, default=None)
    return vector


@dataclass
class CachingEmbedder:
    """Wraps an embedder (same name, same vectors) with the embedding cache."""

    inner: Any
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.inner.name

    def embed(self, texts: list[str]) -> np.ndarray:
        return embed_cached(self.inner, texts)


def caching(embedder: Any) -> CachingEmbedder:
    return embedder if isinstance(embedder, CachingEmbedder) else CachingEmbedder(embedder)


def prune(max_entries: int) -> int:
    """Keep the newest ``max_entries`` vectors (any model); returns how many went.

    A vector that goes costs one model call the next time its text is embedded; the chunks keep
    their own vectors, so nothing an answer needs is lost.
    """
    table = CachedEmbedding._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            DELETE FROM {table} WHERE id IN (
                SELECT id FROM {table} ORDER BY created_at DESC, id DESC OFFSET %s
            )
            """,
            [max_entries],
        )
        return cursor.rowcount
