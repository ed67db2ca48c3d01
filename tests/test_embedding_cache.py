"""The embedding cache: no chunk text or question is sent to the model twice."""

from __future__ import annotations

import json
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

from rag.embedding_cache import embed_cached
from rag.embeddings import LocalEmbedder
from rag.ingestion import embedding_input, ingest_paths
from rag.models import Chunk, Sentence
from rag.text import text_hash

pytestmark = pytest.mark.django_db

APPLES = "Alpha paragraph. " + "The first paragraph talks about apples and orchards in some detail. " * 8
BANANAS = "Beta paragraph. " + "The second paragraph talks about bananas and plantations at length. " * 8
CHERRIES = "Gamma paragraph. " + "The third paragraph talks about cherries and their blossoms too. " * 8


class CountingEmbedder:
    """The local model, recording every text it is asked to embed."""

    def __init__(self, name: str | None = None) -> None:
        self.inner = LocalEmbedder()
        self.name = name or self.inner.name
        self.texts: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.embed(texts)


class RecordingEmbedder:
    """A vector that depends on its text alone (seeded by its hash), and every batch recorded."""

    name = "test/recording"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    @staticmethod
    def vector(text: str) -> np.ndarray:
        v = np.random.default_rng(int(text_hash(text)[:12], 16)).standard_normal(384).astype(np.float32)
        return v / np.linalg.norm(v)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.batches.append(list(texts))
        return np.stack([self.vector(t) for t in texts])

    @staticmethod
    def token_counts(texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]


def test_ingestion_embeds_each_text_once_longest_first_and_stores_each_its_own_vector(write_files):
    # Long enough for several overlapping chunks, whose overlaps repeat sentences.
    lines = [
        f"Rule {n}: the {word} valve is checked {' and '.join(['every single day'] * (n % 3 + 1))}."
        for n, word in enumerate(["north", "south", "east", "west", "upper", "lower", "inner", "outer"] * 4)
    ]
    root = write_files({"valves.txt": "Valve checks\n\n" + " ".join(lines)})
    embedder = RecordingEmbedder()

    report = ingest_paths(
        paths=[root], collection_name="batches", embedder=embedder, batch_size=4, use_embedding_cache=False
    )

    sent = [text for batch in embedder.batches for text in batch]
    assert report.chunks >= 3 and all(len(batch) <= 4 for batch in embedder.batches)
    assert len(sent) == len(set(sent))  # the sentences the chunks share are embedded once
    lengths = RecordingEmbedder.token_counts(sent)
    assert lengths == sorted(lengths, reverse=True)  # batches of like length in tokens
    chunks = Chunk.objects.filter(collection__name="batches")
    sentences = Sentence.objects.filter(chunk__collection__name="batches")
    assert sentences.count() > len(set(sentences.values_list("text", flat=True)))  # shared indeed
    for chunk in chunks:
        assert np.allclose(chunk.embedding, embedder.vector(embedding_input(chunk.heading, chunk.text)), atol=1e-6)
    for sentence in sentences:
        assert np.allclose(sentence.embedding, embedder.vector(sentence.text), atol=1e-6)


def test_counting_tokens_needs_no_model_and_agrees_with_it(monkeypatch):
    texts = ["hello world", "word " * 600, "def __init__(self): x := 1 ** 2", "Ünïcödé — text"]
    model = LocalEmbedder.model()
    encoded = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)
    expected = [len(ids) for ids in encoded["input_ids"]]
    assert expected[1] == model.max_seq_length  # truncated where the model truncates
    monkeypatch.setattr(LocalEmbedder, "_tokenizer", None)
    monkeypatch.setattr(LocalEmbedder, "model", classmethod(lambda cls: pytest.fail("the model was loaded")))
    assert LocalEmbedder().token_counts(texts) == expected


def test_reingesting_an_edited_file_embeds_only_the_changed_chunk(write_files):
    root = write_files({"fruit.txt": f"{APPLES}\n\n{BANANAS}\n\n{CHERRIES}"})
    embedder = CountingEmbedder()
    report = ingest_paths(paths=[root], collection_name="emb-cache", embedder=embedder)
    # Three chunks, and the one sentence each paragraph repeats (sentences are embedded for reranking).
    assert report.chunks == 3 and len(embedder.texts) == 6

    write_files({"fruit.txt": f"{APPLES}\n\n{BANANAS.replace('Beta paragraph.', 'Beta, edited.')}\n\n{CHERRIES}"})
    embedder.texts.clear()
    report = ingest_paths(paths=[root], collection_name="emb-cache", embedder=embedder)
    assert report.count("updated") == 1 and report.chunks == 3
    assert len(embedder.texts) == 1 and "Beta, edited." in embedder.texts[0]
    # The chunks of the unchanged paragraphs carry exactly the vectors they had.
    stored = dict(Chunk.objects.filter(collection__name="emb-cache").values_list("ordinal", "embedding"))
    again = embedder.inner.embed([embedder.texts[0]])[0]
    assert np.allclose(stored[1], again, atol=1e-6)


def test_the_same_file_in_another_collection_costs_no_model_call(write_files):
    root = write_files({"fruit.txt": f"{APPLES}\n\n{CHERRIES}"})
    embedder = CountingEmbedder()
    ingest_paths(paths=[root], collection_name="emb-one", embedder=embedder)
    embedded = len(embedder.texts)
    ingest_paths(paths=[root], collection_name="emb-two", embedder=embedder)
    assert len(embedder.texts) == embedded == 4  # two chunks and their two sentences, once
    assert Chunk.objects.filter(collection__name="emb-two").count() == 2


def test_vectors_are_cached_per_model():
    first, other = CountingEmbedder(), CountingEmbedder(name="test/another-model")
    vectors = embed_cached(first, [APPLES, CHERRIES, APPLES])
    assert vectors.shape == (3, 384) and len(first.texts) == 2  # a repeated text is embedded once
    embed_cached(other, [APPLES])
    assert other.texts == [APPLES]
    again = embed_cached(first, [CHERRIES, APPLES])
    assert len(first.texts) == 2
    assert np.array_equal(again, vectors[[1, 0]])  # float32 survives the round trip exactly


def test_a_question_is_embedded_once_even_when_the_answer_cache_is_bypassed(
    client, fake_ollama, resilience_config, write_files
):
    resilience_config(
        provider={"ollama_base_url": fake_ollama.url, "embedding_backend": "ollama", "embedding_model": "all-minilm"}
    )
    root = write_files({"parking.txt": "Staff parking is behind building B. Visitors park at the front gate."})
    call_command("ingest", str(root), "--collection", "emb-ollama", "--no-progress", stdout=StringIO())
    fake_ollama.reset_counters()
    for _ in range(3):
        body = {"question": "Where do staff park?", "collection": "emb-ollama", "use_cache": False}
        response = client.post("/api/query", json.dumps(body), content_type="application/json")
        assert response.status_code == 200 and response.json()["cache"] == "bypass"
        assert response.json()["sources"][0]["source"].endswith("parking.txt")
    assert fake_ollama.count("/api/embed") == 1


def test_a_broken_embedding_cache_falls_back_to_the_model(write_files):
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE resilience_cachedembedding RENAME TO broken_embeddings")
    root = write_files({"fruit.txt": APPLES})
    embedder = CountingEmbedder()
    report = ingest_paths(paths=[root], collection_name="emb-broken", embedder=embedder)
    assert report.count("new") == 1 and len(embedder.texts) == 2  # the chunk and its sentence


def test_spacing_does_not_change_the_key_but_case_does():
    assert text_hash("a  b\n c ") == text_hash("a b c")
    assert text_hash("Python") != text_hash("python")
