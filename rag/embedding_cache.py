"""The embedding cache: no text is embedded twice by the same model.

Vectors are keyed by the embedder's name and the text's hash, so an unchanged chunk of an edited
file, or a question asked again, costs no model call.
"""

from __future__ import annotations

import logging
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


def embed_uncached(embedder: Any, texts: list[str]) -> np.ndarray:
    """The model's vectors for texts known not to be cached yet, stored in the cache when
    ``embedder`` is a caching one."""
    inner = embedder.inner if isinstance(embedder, CachingEmbedder) else None
    if inner is None:
        return embedder.embed(texts)
    vectors = np.asarray(inner.embed(texts), dtype=np.float32)
    new = {text_hash(t): v for t, v in zip(texts, vectors, strict=True)}
    safely("embedding store", _save_embeddings, embedder.name, new, default=None)
    return vectors


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
