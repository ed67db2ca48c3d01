"""manage.py reembed: converts collections to the configured embedding model, in resumable batches."""

from __future__ import annotations

from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from rag.ingestion import embedding_input
from rag.management.commands import reembed
from rag.models import Chunk, Collection, Job
from rag.retrieval import vector_search
from resilience.errors import OllamaUnavailable

pytestmark = pytest.mark.django_db

OLD = "ollama/all-minilm"
NEW = "ollama/nomic-embed-text"


@pytest.fixture
def hr(fake_ollama, resilience_config, write_files) -> Collection:
    """Five one-chunk documents embedded by the fake Ollama's all-minilm; the config then names nomic."""
    provider = {"ollama_base_url": fake_ollama.url, "embedding_backend": "ollama", "embedding_model": "all-minilm"}
    resilience_config(provider=provider)
    root = write_files({f"policy{i}.txt": f"Policy {i}: holidays are {i + 20} days a year." for i in range(5)})
    call_command("ingest", str(root), "--collection", "hr", "--no-progress", stdout=StringIO())
    with connection.cursor() as cursor:
        # Inside the test's transaction the inserts leave trigger events that CREATE INDEX (a new
        # model's vector index) refuses to run after; in autocommit there are none.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    resilience_config(provider={**provider, "embedding_model": "nomic-embed-text"})
    return Collection.objects.get(name="hr")


def models_of(collection: Collection) -> list[str]:
    return list(Chunk.objects.filter(collection=collection).order_by("id").values_list("embedding_model", flat=True))


def reembed_hr(*args: str) -> str:
    out = StringIO()
    call_command("reembed", "--collection", "hr", "--no-progress", *args, stdout=out)
    return out.getvalue()


def test_it_converts_a_collection_to_the_configured_model(hr, fake_ollama):
    version = hr.corpus_version
    output = reembed_hr("--batch-size", "2")
    assert "5 chunks re-embedded with ollama/nomic-embed-text in 1 collection(s), 0 already were" in output
    assert models_of(hr) == [NEW] * 5
    chunk = Chunk.objects.select_related("document").filter(collection=hr).first()
    expected = fake_ollama.embedding(embedding_input(chunk.document.title, chunk.text))
    assert np.allclose(chunk.embedding, expected, atol=1e-6)
    hr.refresh_from_db()
    assert hr.corpus_version > version  # answers cached mid-conversion are not served after it


def test_vector_search_sees_the_chunks_converted_so_far(hr, fake_ollama):
    question = np.asarray(fake_ollama.embedding("How many holidays?"), dtype=np.float32)
    assert vector_search([hr.pk], NEW, question, 10) == []
    reembed_hr("--batch-size", "2")
    assert len(vector_search([hr.pk], NEW, question, 10)) == 5
    assert vector_search([hr.pk], OLD, question, 10) == []


class StopAfter:
    """An embedder that gives up after ``calls`` batches, as a Ctrl-C or a crash would."""

    def __init__(self, inner, calls: int, error: BaseException) -> None:
        self.inner, self.name, self.calls, self.error = inner, inner.name, calls, error

    def embed(self, texts):
        if self.calls == 0:
            raise self.error
        self.calls -= 1
        return self.inner.embed(texts)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (KeyboardInterrupt(), "Interrupted. The 2 chunks done are kept"),
        (OllamaUnavailable("connection refused"), "embeddings unavailable: connection refused. The 2 chunks done"),
    ],
)
def test_an_interrupted_run_keeps_its_batches_and_resumes(hr, monkeypatch, error, message):
    real = reembed.embedder_for
    monkeypatch.setattr(reembed, "embedder_for", lambda *a: StopAfter(real(*a), 1, error))
    with pytest.raises(CommandError, match=message):
        reembed_hr("--batch-size", "2")
    assert models_of(hr) == [NEW, NEW, OLD, OLD, OLD]

    monkeypatch.setattr(reembed, "embedder_for", real)
    output = reembed_hr("--batch-size", "2")
    assert "3 chunks re-embedded" in output and "2 already were" in output
    assert models_of(hr) == [NEW] * 5


def test_a_second_run_has_nothing_to_do(hr):
    reembed_hr()
    assert "0 chunks re-embedded with ollama/nomic-embed-text in 1 collection(s), 5 already were" in reembed_hr()


def test_backend_and_model_can_be_named_to_convert_before_switching(hr):
    output = reembed_hr("--backend", "ollama", "--model", "mxbai-embed-large")
    assert "with ollama/mxbai-embed-large" in output
    assert models_of(hr) == ["ollama/mxbai-embed-large"] * 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Give --collection NAME"),
        (["--collection", "hr", "--all"], "Give --collection NAME"),
        (["--collection", "nope"], "No such collection: nope"),
        (["--all", "--backend", "local", "--model", "bge-small"], "The local backend only has all-MiniLM-L6-v2"),
        (["--all", "--batch-size", "0"], "--batch-size must be between 1 and 4096"),
        (["--collection", "hr", "--batch-size", "99999999999999999999"], "--batch-size must be between 1 and 4096"),
        (["--all", "--batch-size", "99999999999999999999", "--background"], "--batch-size must be between 1 and 4096"),
        (["--all", "--backend", "ollama", "--model", "m" * 300, "--background"], "Model name too long"),
    ],
)
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("reembed", *args, stdout=StringIO())
    assert not Job.objects.exists(), "nothing is queued for a worker to retry"


def test_a_model_without_a_vector_index_gets_it_once_its_vectors_are_written(hr, fake_ollama):
    from rag.embeddings import OllamaEmbedder
    from rag.reembedding import reembed_collections
    from rag.sql import hnsw_index_name, index_exists

    model = "snowflake-arctic-embed"
    index = hnsw_index_name("chunk_emb", f"ollama/{model}", 384)
    during: list[bool] = []

    reembed_collections(
        collections=[hr],
        embedder=OllamaEmbedder(model),
        batch_size=2,
        progress=lambda done: during.append(index_exists(index)),
    )

    assert during == [False, False, False]  # no row went into a live index one by one
    assert index_exists(index)
    question = np.asarray(fake_ollama.embedding("How many holidays?"), dtype=np.float32)
    assert len(vector_search([hr.pk], f"ollama/{model}", question, 10)) == 5
