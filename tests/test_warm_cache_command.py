"""``manage.py warm_cache``: from a file and from the query log, safe to re-run, failures reported."""

from __future__ import annotations

import json
import os
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from rag.answers import answer_question
from rag.ingestion import ingest_items
from rag.models import CachedAnswer, Collection, Job, QueryLog
from rag.sources import SourceItem
from rag.visibility import OPERATOR

pytestmark = pytest.mark.django_db

COLLECTION = "warm-test"
TEXTS = {
    "yield": "The yield statement. Using yield in a function body makes it a generator function.",
    "lambda": "Lambda expressions. A lambda expression creates an anonymous function of one expression.",
    "with": "The with statement wraps a block with the methods of a context manager.",
}


def items() -> list[SourceItem]:
    return [SourceItem(f"warm:{key}", text.encode(), "text/plain", key) for key, text in TEXTS.items()]


@pytest.fixture
def corpus(resilience_config) -> Collection:
    assert not ingest_items(items(), collection_name=COLLECTION).failures
    return Collection.objects.get(name=COLLECTION)


def warm(*args: str) -> str:
    out = StringIO()
    call_command("warm_cache", *args, "--no-progress", stdout=out, stderr=StringIO())
    return out.getvalue()


def cached_questions(collection: str) -> set[str]:
    ids = [Collection.objects.get(name=collection).pk]
    return set(CachedAnswer.objects.filter(collection_ids=ids).values_list("question", flat=True))


def test_warm_from_a_file_then_queries_hit_and_a_rerun_warms_nothing(corpus, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text(
        "# questions users ask\nWhat does the yield statement do?\n\nwhat does the yield statement do\n"
        "  What is a lambda expression?  \n",
        encoding="utf-8",
    )
    logged = QueryLog.objects.count()
    assert "Warmed 2, already cached 0, failed 0 of 2 question(s)" in warm(
        "--file", str(queries), "--collection", COLLECTION
    )
    assert cached_questions(COLLECTION) == {"What does the yield statement do?", "What is a lambda expression?"}
    assert QueryLog.objects.count() == logged  # warming is not a user's question
    assert (
        answer_question(question="What is a lambda expression", caller=OPERATOR, collection_name=COLLECTION).cache
        == "exact"
    )
    assert "Warmed 0, already cached 2, failed 0" in warm("--file", str(queries), "--collection", COLLECTION)


def test_warm_the_most_asked_questions_from_the_query_log(client, corpus):
    asked = {"What does the yield statement do?": 3, "What does the with statement do?": 2, "What is a lambda?": 1}
    for question, times in asked.items():
        for _ in range(times):
            body = {"question": question, "collection": COLLECTION, "use_cache": False}
            assert client.post("/api/query", json.dumps(body), content_type="application/json").status_code == 200
    assert not cached_questions(COLLECTION)
    assert "Warmed 2, already cached 0, failed 0" in warm("--top", "2", "--collection", COLLECTION)
    assert cached_questions(COLLECTION) == {"What does the yield statement do?", "What does the with statement do?"}


def test_failures_are_reported_and_exit_non_zero(corpus, tmp_path, fake_ollama, resilience_config):
    resilience_config(provider={"ollama_base_url": fake_ollama.url, "generation_backend": "ollama"})
    fake_ollama.set_mode("down")
    queries = tmp_path / "queries.txt"
    queries.write_text("What does the yield statement do?\nWhat is a lambda expression?\n", encoding="utf-8")
    err = StringIO()
    with pytest.raises(
        CommandError, match=r"2 question\(s\) could not be cached\. Warmed 0, already cached 0, failed 2"
    ):
        call_command("warm_cache", "--file", str(queries), "--collection", COLLECTION, stdout=StringIO(), stderr=err)
    assert "FAILED [warm-test] What does the yield statement do?: generation unavailable" in err.getvalue()
    assert not cached_questions(COLLECTION)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "one of the arguments --file --top is required"),
        (["--top", "0"], "--top must be between 1 and 100000"),
        (["--top", "99999999999999999999999"], "--top must be between 1 and 100000"),
        (["--top", "99999999999999999999999", "--background"], "--top must be between 1 and 100000"),
        (["--top", "3", "--concurrency", "0"], "--concurrency must be between 1 and 32"),
        (["--top", "3", "--concurrency", "100000"], "--concurrency must be between 1 and 32"),
        (["--file", "/no/such/queries.txt"], "Cannot read /no/such/queries.txt"),
        (["--file", "QUERIES", "--collection", "nope"], "No collection named 'nope'"),
        (["--top", "2", "--collection", "nosuch"], "No collection named 'nosuch'"),
        (["--top", "2", "--collection", "nosuch", "--background"], "No collection named 'nosuch'"),
        (["--file", "NUL"], "queries.txt line 2: holds a NUL character"),
        (["--file", "LONG", "--background"], "queries.txt line 2: longer than 2000 characters"),
    ],
)
def test_bad_input_is_a_command_error(db, tmp_path, args, message):
    queries = tmp_path / "queries.txt"
    second = "What is\x00 a generator?" if "NUL" in args else "why " * 600 if "LONG" in args else ""
    queries.write_text(f"What is a lambda?\n{second}\n", encoding="utf-8")
    Collection.objects.get_or_create(name="default")
    args = [str(queries) if a in ("QUERIES", "NUL", "LONG") else a for a in args]
    with pytest.raises(CommandError, match=message):
        call_command("warm_cache", *args, stdout=StringIO(), stderr=StringIO())
    assert not Job.objects.exists()


@pytest.fixture(scope="module")
def shared_corpus(django_db_setup, django_db_blocker):
    """A committed collection: the worker threads have connections of their own."""
    name = f"warm-shared-{os.getpid()}"
    with django_db_blocker.unblock():
        assert not ingest_items(items(), collection_name=name).failures
    yield name
    with django_db_blocker.unblock():
        Collection.objects.filter(name=name).delete()


def test_concurrent_warming_caches_every_question(shared_corpus, tmp_path, resilience_config):
    questions = [f"What does the yield statement do in case {n}?" for n in range(6)]
    queries = tmp_path / "queries.txt"
    queries.write_text("\n".join(questions), encoding="utf-8")
    out = warm("--file", str(queries), "--collection", shared_corpus, "--concurrency", "3")
    assert "Warmed 6, already cached 0, failed 0 of 6" in out
    assert cached_questions(shared_corpus) == set(questions)
