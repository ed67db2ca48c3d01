from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from rag.models import Chunk, Collection, Document

pytestmark = pytest.mark.django_db

GUIDE = """# Deployment guide

Our service runs on three machines in the north region. Each machine has sixteen cores.

Deployments happen every Tuesday after the change review. Rollbacks take five minutes.
"""


def ingest(*args: str) -> str:
    out = StringIO()
    call_command("ingest", *args, "--no-progress", stdout=out, stderr=StringIO())
    return out.getvalue()


def test_ingests_a_tree_of_supported_files(write_files, make_pdf):
    root = write_files(
        {
            "guide.md": GUIDE,
            "notes/faq.txt": "Question time. The cafeteria opens at eight in the morning.",
            "notes/page.html": "<html><title>Page</title><body><p>The library closes at six.</p></body></html>",
            "report.pdf": make_pdf("Revenue grew by twelve percent this year."),
            "ignored.csv": "a,b\n1,2\n",
        }
    )
    summary = ingest(str(root), "--collection", "docs")
    assert "4 new, 0 updated, 0 unchanged, 0 failed" in summary
    documents = Document.objects.filter(collection__name="docs")
    assert documents.count() == 4
    assert {d.media_type for d in documents} == {"text/markdown", "text/plain", "text/html", "application/pdf"}
    assert documents.get(source__endswith="guide.md").title == "Deployment guide"
    chunks = Chunk.objects.filter(collection__name="docs")
    assert chunks.count() >= 4
    chunk = chunks.first()
    assert chunk.embedding_model == "local/all-MiniLM-L6-v2"
    assert len(chunk.embedding) == 384


def test_rerunning_on_the_same_tree_writes_nothing(write_files):
    root = write_files({"guide.md": GUIDE})
    ingest(str(root), "--collection", "docs")
    before = list(Chunk.objects.filter(collection__name="docs").values_list("id", flat=True))
    version = Collection.objects.get(name="docs").corpus_version
    summary = ingest(str(root), "--collection", "docs")
    assert "0 new, 0 updated, 1 unchanged, 0 failed; 0 chunks" in summary
    assert list(Chunk.objects.filter(collection__name="docs").values_list("id", flat=True)) == before
    assert Collection.objects.get(name="docs").corpus_version == version


def test_a_changed_file_replaces_its_chunks(write_files):
    root = write_files({"guide.md": GUIDE})
    ingest(str(root), "--collection", "docs")
    document = Document.objects.get(collection__name="docs")
    old_chunks = set(document.chunks.values_list("id", flat=True))
    version = document.collection.corpus_version
    (root / "guide.md").write_text(GUIDE.replace("Tuesday", "Thursday"), encoding="utf-8")
    summary = ingest(str(root), "--collection", "docs")
    assert "0 new, 1 updated" in summary
    document.refresh_from_db()
    texts = " ".join(document.chunks.values_list("text", flat=True))
    assert "Thursday" in texts and "Tuesday" not in texts
    assert not old_chunks & set(document.chunks.values_list("id", flat=True))
    assert Document.objects.filter(collection__name="docs").count() == 1
    assert document.collection.corpus_version > version


def test_bad_files_are_reported_skipped_and_leave_nothing(write_files):
    root = write_files(
        {
            "good.txt": "A perfectly fine document about gardening and tomatoes.",
            "latin1.txt": "caf\xe9".encode("latin-1"),
            "empty.md": "",
            "broken.pdf": b"%PDF-1.4 garbage",
            "binary.txt": b"abc\x00def",
        }
    )
    err = StringIO()
    with pytest.raises(CommandError, match=r"4 file\(s\) failed"):
        call_command("ingest", str(root), "--collection", "mixed", "--no-progress", stdout=StringIO(), stderr=err)
    messages = err.getvalue()
    assert "latin1.txt: not valid UTF-8" in messages
    assert "empty.md: file is empty" in messages
    assert "broken.pdf: corrupt PDF" in messages
    assert "binary.txt" in messages
    assert list(Document.objects.filter(collection__name="mixed").values_list("title", flat=True)) == [
        "A perfectly fine document about gardening and tomatoes."
    ]


def test_unsupported_file_named_directly_is_a_failure(write_files):
    root = write_files({"data.csv": "a,b"})
    with pytest.raises(CommandError, match="failed"):
        ingest(str(root / "data.csv"), "--collection", "csv")
    assert not Document.objects.filter(collection__name="csv").exists()


def test_missing_path_is_a_failure(tmp_path):
    with pytest.raises(CommandError, match="failed"):
        ingest(str(tmp_path / "nope"))


def test_no_paths_is_a_usage_error():
    with pytest.raises(CommandError, match="at least one PATH"):
        ingest()


def test_invalid_collection_name_is_refused(write_files):
    root = write_files({"a.txt": "Some text here."})
    with pytest.raises(CommandError, match="Invalid collection name"):
        ingest(str(root), "--collection", "bad name!")


def test_if_empty_skips_a_collection_with_documents(write_files):
    root = write_files({"a.txt": "Some text about rivers and lakes."})
    ingest(str(root), "--collection", "lakes")
    assert "nothing to do" in ingest("--demo", "--if-empty", "--collection", "lakes")
    assert Document.objects.filter(collection__name="lakes").count() == 1


def test_the_first_ingest_with_a_new_model_builds_its_vector_index_after_the_chunks(
    write_files, fake_ollama, resilience_config
):
    from rag.ingestion import ingest_paths
    from rag.sql import hnsw_index_name, index_exists

    model = "granite-embedding"
    index = hnsw_index_name("chunk_emb", f"ollama/{model}", 384)
    resilience_config(
        provider={"ollama_base_url": fake_ollama.url, "embedding_backend": "ollama", "embedding_model": model}
    )
    root = write_files({f"note{i}.txt": f"Note {i}: the lift is serviced on day {i}." for i in range(3)})
    during: list[bool] = []

    report = ingest_paths(
        paths=[root], collection_name="lifts", batch_size=1, progress=lambda r: during.append(index_exists(index))
    )

    assert report.chunks == 3
    assert during == [False, False, False]
    assert index_exists(index)


def test_a_collection_ingested_as_restricted_is_never_public(write_files, client):
    from django.contrib.auth.models import Group, User

    with pytest.raises(CommandError, match="No group named 'ops'"):
        ingest(str(write_files({"guide.md": GUIDE})), "--collection", "ops-docs", "--restricted-to", "ops")
    assert not Collection.objects.filter(name="ops-docs").exists()
    ops = Group.objects.create(name="ops")
    ingest(str(write_files({"guide.md": GUIDE})), "--collection", "ops-docs", "--restricted-to", "ops")
    collection = Collection.objects.get(name="ops-docs")
    assert collection.visibility == "restricted" and list(collection.groups.all()) == [ops]
    body = '{"question": "When do deployments happen?", "collection": "ops-docs"}'
    assert client.post("/api/query", body, content_type="application/json").status_code == 404
    member = User.objects.create_user("op", password="x")
    member.groups.add(ops)
    client.force_login(member)
    answer = client.post("/api/query", body, content_type="application/json").json()
    assert "Tuesday" in answer["answer"]
