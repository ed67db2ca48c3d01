import os
import stat
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from rag.models import Chunk, Collection, Document, Job, JobStatus

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
            "garbled.txt": b"caf\x81\xe9 au lait",  # neither UTF-8 nor Windows-1252
            "empty.md": "",
            "broken.pdf": b"%PDF-1.4 garbage",
            "binary.txt": b"abc\x00def",
        }
    )
    err = StringIO()
    with pytest.raises(CommandError, match=r"4 file\(s\) failed"):
        call_command("ingest", str(root), "--collection", "mixed", "--no-progress", stdout=StringIO(), stderr=err)
    messages = err.getvalue()
    assert "garbled.txt: not valid UTF-8 text (byte 3), nor UTF-16 with a byte-order mark, nor Windows-1252" in messages
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


@pytest.mark.parametrize("name", ["bad name!", "hr\n"])
def test_invalid_collection_name_is_refused(write_files, name):
    root = write_files({"a.txt": "Some text here."})
    with pytest.raises(CommandError, match="Invalid collection name"):
        ingest(str(root), "--collection", name)
    assert not Collection.objects.filter(name=name).exists()


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


def write_badly_named_file(folder) -> None:
    """A file whose name is not UTF-8 (any bytes but / and NUL make a name on Linux)."""
    with open(os.fsencode(folder) + b"/bad\xffname.txt", "wb") as f:
        f.write(b"A file with a name no one can print.\n")


def test_a_file_name_that_is_not_utf8_fails_alone(write_files):
    root = write_files({"good.txt": "Gardening and tomatoes.", "sub/more.md": "# More\n\nAbout roses."})
    write_badly_named_file(root)
    err = StringIO()
    with pytest.raises(CommandError, match=r"1 file\(s\) failed.*2 new, 0 updated, 0 unchanged, 1 failed"):
        call_command("ingest", str(root), "--collection", "names", "--no-progress", stdout=StringIO(), stderr=err)
    assert f"FAILED {root}/bad\ufffdname.txt: file name is not UTF-8" in err.getvalue()
    assert sorted(Document.objects.filter(collection__name="names").values_list("source", flat=True)) == [
        "good.txt",
        "sub/more.md",
    ]


def test_a_file_name_that_is_not_utf8_fails_alone_in_the_background(write_files):
    root = write_files({"good.txt": "Gardening and tomatoes."})
    write_badly_named_file(root)
    err = StringIO()
    with pytest.raises(CommandError, match=r"1 file\(s\) could not be queued.*queued 1 file\(s\)"):
        call_command("ingest", str(root), "--background", "--collection", "names", stdout=StringIO(), stderr=err)
    assert "bad\ufffdname.txt: file name is not UTF-8" in err.getvalue()
    failed = Job.objects.get(status=JobStatus.FAILED)
    assert failed.source.endswith("bad\ufffdname.txt") and failed.reason == "file name is not UTF-8"
    assert Job.objects.get(status=JobStatus.QUEUED).source == "good.txt"


def test_an_empty_path_is_refused_not_taken_for_the_current_folder(write_files, monkeypatch):
    monkeypatch.chdir(write_files({"here.txt": "A file in the current folder."}))
    with pytest.raises(CommandError, match="An empty PATH names no file or folder"):
        ingest("", "--collection", "here")
    assert not Collection.objects.filter(name="here").exists()


@pytest.fixture
def unreadable(monkeypatch):
    """Make folders unreadable (mode 000). Root reads them whatever their mode, so for root the
    refusal the kernel would give anyone else is played by os.scandir."""

    def make(*folders) -> None:
        for folder in folders:
            folder.chmod(0)
        if os.geteuid() == 0:
            real = os.scandir

            def scandir(path="."):
                if not stat.S_IMODE(os.stat(path).st_mode) & 0o444:
                    raise PermissionError(13, "Permission denied", os.fsdecode(path))
                return real(path)

            monkeypatch.setattr(os, "scandir", scandir)

    yield make


def test_unreadable_folders_are_failures_not_empty(write_files, tmp_path, unreadable):
    root = write_files({"good.txt": "Gardening and tomatoes.", "locked/secret.txt": "Hidden away."})
    closed = tmp_path.parent / f"{tmp_path.name}-closed"
    closed.mkdir()
    (closed / "inside.txt").write_text("Never read.", encoding="utf-8")
    unreadable(root / "locked", closed)
    err = StringIO()
    try:
        with pytest.raises(CommandError, match=r"2 file\(s\) failed.*1 new, 0 updated, 0 unchanged, 2 failed"):
            args = [str(root), str(closed), "--collection", "locked", "--no-progress"]
            call_command("ingest", *args, stdout=StringIO(), stderr=err)
    finally:
        (root / "locked").chmod(0o755)
        closed.chmod(0o755)
    assert f"FAILED {root}/locked: cannot read folder: permission denied" in err.getvalue()
    assert f"FAILED {closed}: cannot read folder: permission denied" in err.getvalue()
    assert list(Document.objects.filter(collection__name="locked").values_list("source", flat=True)) == ["good.txt"]


def test_a_restricted_ingest_that_cannot_read_its_paths_leaves_the_collection_as_it_was(write_files, tmp_path):
    from django.contrib.auth.models import Group

    Group.objects.create(name="g1")
    ingest(str(write_files({"guide.md": GUIDE})), "--collection", "c1")
    err = StringIO()
    with pytest.raises(CommandError, match=r"1 path\(s\) cannot be read: nothing was ingested and collection 'c1'"):
        args = [str(tmp_path / "guide.md"), str(tmp_path / "nonexistent.txt"), "--collection", "c1"]
        call_command("ingest", *args, "--restricted-to", "g1", "--no-progress", stdout=StringIO(), stderr=err)
    assert "nonexistent.txt: no such file or directory" in err.getvalue()
    collection = Collection.objects.get(name="c1")
    assert collection.visibility == "public" and not collection.groups.exists()
    # --if-empty adds no document to a collection that has some, but restricts it as asked.
    said = ingest(str(tmp_path), "--collection", "c1", "--if-empty", "--restricted-to", "g1")
    assert "Collection 'c1' (restricted to g1) already has documents; nothing to do." in said
    collection = Collection.objects.get(name="c1")
    assert collection.visibility == "restricted" and [g.name for g in collection.groups.all()] == ["g1"]


def test_a_restricted_ingest_fails_an_unreadable_file_inside_a_folder_alone(tmp_path, unreadable):
    from django.contrib.auth.models import Group

    Group.objects.create(name="g1")
    root = tmp_path / "docs"
    (root / "locked").mkdir(parents=True)
    (root / "good.txt").write_text("Deployments happen on Tuesdays.", encoding="utf-8")
    (root / "locked" / "inside.txt").write_text("Never read.", encoding="utf-8")
    unreadable(root / "locked")
    err = StringIO()
    try:
        with pytest.raises(CommandError, match=r"1 file\(s\) failed.*1 new, 0 updated, 0 unchanged, 1 failed"):
            args = [str(root), "--collection", "c2", "--restricted-to", "g1", "--no-progress"]
            call_command("ingest", *args, stdout=StringIO(), stderr=err)
    finally:
        (root / "locked").chmod(0o755)
    assert f"FAILED {root}/locked: cannot read folder: permission denied" in err.getvalue()
    collection = Collection.objects.get(name="c2")
    assert collection.visibility == "restricted"
    assert list(collection.documents.values_list("source", flat=True)) == ["good.txt"]
