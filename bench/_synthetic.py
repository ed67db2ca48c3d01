"""The synthetic corpus of ``python -m bench retrieval``: copies of the demo chunks, loaded in bulk.

Each copy keeps its original's document (copied too), ordinal, heading, text and full-text vector
(not its sentences' vectors: the reranker scores a copy by its chunk's similarity alone); its
embedding is the original's moved up to halfway towards one of its ten nearest chunks, plus
Gaussian noise of a norm that alone would leave a cosine similarity of 0.85 to 0.95. Rows are
loaded with binary COPY into a temporary table, then moved into ``rag_chunk`` by one INSERT ...
SELECT that takes the text from the original.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


class SyntheticCorpus:
    """The scratch collection: the demo chunks' copies, loaded in steps of growing size."""

    def __init__(self, source: Any, collection: Any, model: str, seed: int = 42) -> None:
        from rag.models import Chunk

        self.source, self.collection, self.model = source, collection, model
        rows = list(
            Chunk.objects.filter(collection=source)
            .order_by("id")
            .values_list("id", "document_id", "ordinal", "embedding")
        )
        self.base_ids = np.array([r[0] for r in rows], dtype=np.int64)
        self.base_documents = [r[1] for r in rows]
        self.base_ordinals = [r[2] for r in rows]
        self.base_vectors = np.stack([np.asarray(r[3], dtype=np.float32) for r in rows])
        similarity = self.base_vectors @ self.base_vectors.T
        np.fill_diagonal(similarity, -1.0)
        self.neighbours = np.argsort(-similarity, axis=1)[:, :10]
        self.rng = np.random.default_rng(seed)
        self.vectors = np.zeros((0, self.base_vectors.shape[1]), dtype=np.float32)
        self.ids = np.zeros(0, dtype=np.int64)
        self.copies: dict[tuple[int, int], int] = {}  # (original document, replica): its copy's id
        self.replicas = 0  # documents copied for replicas [0, replicas)

    def __len__(self) -> int:
        return len(self.ids)

    def _perturbed(self, which: np.ndarray) -> np.ndarray:
        dims = self.base_vectors.shape[1]
        # Up to halfway towards one of the original's ten nearest chunks, then noise: copies fill
        # the space between related passages as a larger corpus on the same topics would, instead
        # of 771 islands of look-alikes (which no vector index searches well, nor any real corpus has).
        toward = self.neighbours[which, self.rng.integers(self.neighbours.shape[1], size=len(which))]
        weight = self.rng.uniform(0.0, 0.5, size=(len(which), 1)).astype(np.float32)
        mixed = (1 - weight) * self.base_vectors[which] + weight * self.base_vectors[toward]
        mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
        cosine = self.rng.uniform(0.85, 0.95, size=(len(which), 1))
        sigma = np.sqrt((1 / cosine**2 - 1) / dims)  # noise of norm ~sigma*sqrt(dims) gives that cosine
        vectors = mixed + self.rng.normal(size=(len(which), dims)).astype(np.float32) * sigma
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    def grow(self, size: int, *, block: int = 50_000) -> tuple[float, float]:
        """Add rows up to ``size``; returns (seconds in COPY, seconds in the INSERT ... SELECT)."""
        copy_s = insert_s = 0.0
        while len(self) < size:
            count = min(block, size - len(self))
            t_copy, t_insert, ids, vectors = self._add(len(self), count)
            copy_s += t_copy
            insert_s += t_insert
            self.ids = np.concatenate([self.ids, ids])
            self.vectors = np.concatenate([self.vectors, vectors])
        return copy_s, insert_s

    def _copy_documents(self, last_replica: int) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO rag_document (collection_id, source, file_root, title, sha256, media_type, "
                "size_bytes, pipeline, created_at, updated_at) SELECT %s, d.source || '#' || r, '', d.title, "
                "d.sha256, d.media_type, d.size_bytes, d.pipeline, now(), now() "
                "FROM rag_document d, generate_series(%s, %s) r "
                "WHERE d.collection_id = %s RETURNING id, source",
                [self.collection.pk, self.replicas, last_replica, self.source.pk],
            )
            copied = cursor.fetchall()
            cursor.execute("SELECT source, id FROM rag_document WHERE collection_id = %s", [self.source.pk])
            originals = dict(cursor.fetchall())
        for copy_id, source in copied:
            original, _, replica = source.rpartition("#")
            self.copies[(originals[original], int(replica))] = copy_id
        self.replicas = last_replica + 1

    def _add(self, start: int, count: int) -> tuple[float, float, np.ndarray, np.ndarray]:
        from django.db import connection
        from pgvector.psycopg import register_vector

        n = len(self.base_ids)
        index = np.arange(start, start + count)
        which = index % n
        vectors = self._perturbed(which)
        if (start + count - 1) // n >= self.replicas:
            self._copy_documents((start + count - 1) // n)
        documents = [self.copies[(self.base_documents[w], i // n)] for i, w in zip(index, which, strict=True)]
        slot = {(d, self.base_ordinals[w]): i for i, d, w in zip(index.tolist(), documents, which, strict=True)}
        connection.ensure_connection()
        raw = connection.connection
        register_vector(raw)
        t = time.perf_counter()
        with raw.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE IF NOT EXISTS bench_retrieval_stage "
                "(document_id bigint, source_id bigint, embedding vector)"
            )
            cursor.execute("TRUNCATE bench_retrieval_stage")
            with cursor.copy("COPY bench_retrieval_stage FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int8", "vector"])
                for document, w, vector in zip(documents, which.tolist(), vectors, strict=True):
                    copy.write_row((document, int(self.base_ids[w]), vector))
        copy_s = time.perf_counter() - t
        t = time.perf_counter()
        with connection.cursor() as cursor:
            # Each copy takes its original's ordinal, text and full-text vector.
            cursor.execute(
                "INSERT INTO rag_chunk (collection_id, document_id, ordinal, heading, text, embedding, "
                "embedding_model, search_vector) SELECT %s, s.document_id, c.ordinal, c.heading, c.text, "
                "s.embedding, %s, c.search_vector "
                "FROM bench_retrieval_stage s JOIN rag_chunk c ON c.id = s.source_id "
                "RETURNING id, document_id, ordinal",
                [self.collection.pk, self.model],
            )
            inserted = cursor.fetchall()
        insert_s = time.perf_counter() - t
        ids = np.zeros(count, dtype=np.int64)
        for chunk_id, document, ordinal in inserted:
            ids[slot[(document, ordinal)] - start] = chunk_id
        return copy_s, insert_s, ids, vectors

    def exact_top(self, queries: np.ndarray, k: int = 10) -> list[tuple[set[int], float]]:
        """The ids at least as near as each query's k-th nearest (ties count as right), and its similarity."""
        out = []
        for start in range(0, len(queries), 32):
            sims = self.vectors @ queries[start : start + 32].T
            for column in sims.T:
                kth = float(np.partition(column, -k)[-k])
                out.append((set(self.ids[column >= kth - 1e-6].tolist()), kth))
        return out
