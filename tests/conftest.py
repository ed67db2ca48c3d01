"""Shared fixtures: the real (embedded) Postgres test database and a fake Ollama server."""

from __future__ import annotations

import os
import zlib

import pytest

# The test database is seeded from the environment like a fresh deployment. Tests ask far more
# questions a minute than a person would, all from 127.0.0.1: the throttles are set out of reach
# here, and the throttle tests turn them on themselves.
os.environ.setdefault("RAGSITE_ACCESS_IP_RATE", "1000000/minute")
os.environ.setdefault("RAGSITE_ACCESS_KEY_RATE", "1000000/minute")

pytest_plugins = ["tests.fixtures_resilience", "tests.fixtures_teams", "tests.fixtures_golden"]


def pytest_collection_modifyitems(items) -> None:
    """Give every test that uses the demo corpus the test database.

    pytest-django creates the test database only when a collected test is marked for it; a run
    of nothing but live-server tests (browser, gunicorn) would otherwise talk to the development
    database.
    """
    for item in items:
        if "demo_corpus" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("django_db"):
            item.add_marker(pytest.mark.django_db)


@pytest.fixture
def fresh_settings():
    """Each test reads the settings rows afresh, and later tests do not keep a rolled-back change."""
    from resilience import live

    live.invalidate()
    yield
    live.invalidate()


@pytest.fixture
def fake_ollama():
    """A real HTTP server on 127.0.0.1 speaking Ollama's API; tests switch its fault mode."""
    from resilience.fake_ollama import FakeOllama

    with FakeOllama() as fake:
        yield fake


@pytest.fixture(scope="session")
def demo_corpus(django_db_setup, django_db_blocker):
    """The demo corpus ingested once per test session into the 'default' collection.

    It is committed (outside the per-test transactions), so other processes started by tests
    (gunicorn, a second worker) see it too. Tests must not flush the database.
    """
    from django.db import connection

    from rag.ingestion import ingest_demo
    from rag.models import Collection

    assert connection.settings_dict["NAME"].startswith("test"), "refusing to use a non-test database"
    with django_db_blocker.unblock():
        # Unchanged topics are skipped: on a kept test database (--reuse-db) this only re-chunks
        # what an older ingestion pipeline wrote.
        report = ingest_demo(collection_name="default")
        assert not report.failures, report.failures
        return Collection.objects.get(name="default")


@pytest.fixture
def write_files(tmp_path):
    """Write {relative path: str | bytes} under a temporary folder; returns the folder."""

    def write(files: dict[str, str | bytes]):
        for name, content in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        return tmp_path

    return write


def build_pdf(
    text: str | list[str], *, pages: int = 1, repeat: int = 1, compress: bool = False, padding: int = 0
) -> bytes:
    """A real PDF (no external tools) whose ``pages`` pages all draw one content stream.

    The stream shows ``text`` on ``repeat`` lines (or each line of a list once), Flate-compressed if
    asked; ``padding`` adds an unused stream of that many bytes, making the file bigger without
    adding text.
    """
    shown = [text] * repeat if isinstance(text, str) else text
    lines = b"".join(f"({line}) '\n".encode() for line in shown)  # ' : to the next line, then show it
    stream = b"BT /F1 12 Tf 14 TL 72 720 Td\n" + lines + b"ET"
    filters = b""
    if compress:
        stream, filters = zlib.compress(stream, 9), b" /Filter /FlateDecode"
    kids = " ".join(f"{5 + n} 0 R" for n in range(pages)).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count " + str(pages).encode() + b" >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length " + str(len(stream)).encode() + filters + b" >>\nstream\n" + stream + b"\nendstream",
    ]
    objects += [
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 3 0 R >> >> >>"
    ] * pages
    if padding:
        objects.append(b"<< /Length " + str(padding).encode() + b" >>\nstream\n" + b"\0" * padding + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


@pytest.fixture
def make_pdf():
    """Build a small real PDF holding one line of text; see ``build_pdf`` for the options."""
    return build_pdf


@pytest.fixture
def api_key(db) -> str:
    """A key that reads and writes everything (a key issued before scopes existed)."""
    from rag.models import ApiKey

    _, key = ApiKey.issue(name="tests", all_collections=True, can_write=True)
    return key


@pytest.fixture
def key_client(client, api_key):
    """Django's test client sending a valid API key with every request."""
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {api_key}"
    return client


@pytest.fixture
def ollama_facilities(fake_ollama, resilience_config, write_files):
    """A small 'facilities' collection embedded by the fake Ollama, which also writes the answers.

    Returns the fake, its counters reset after the ingestion.
    """
    from io import StringIO

    from django.core.management import call_command

    resilience_config(
        provider={
            "ollama_base_url": fake_ollama.url,
            "embedding_backend": "ollama",
            "embedding_model": "all-minilm",
            "generation_backend": "ollama",
        }
    )
    root = write_files(
        {
            "boilers.txt": "The boiler room is in the basement. Boilers are serviced every October.",
            "parking.txt": "Staff parking is behind building B. Visitors park at the front gate.",
            "lunch.txt": "The canteen serves lunch from noon until two in the afternoon.",
        }
    )
    call_command("ingest", str(root), "--collection", "facilities", "--no-progress", stdout=StringIO())
    fake_ollama.reset_counters()
    return fake_ollama
