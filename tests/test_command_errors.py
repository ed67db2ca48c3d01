"""What every rag command does with a database it cannot reach and with options that are not text:
one line and exit 1, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError

MANAGE = Path(__file__).resolve().parent.parent / "manage.py"
NOWHERE = "postgres://u:p@127.0.0.1:1/x"  # nothing listens on port 1


def manage(*args: str | bytes) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": NOWHERE}
    return subprocess.run([sys.executable, MANAGE, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args",
    [
        ["ingest", "."],
        ["evaluate", "--set", "demo-heldout"],
        ["evaluate", "--export-feedback", "/nonexistent/feedback.jsonl"],
        ["calibrate", "--set", "demo-tune"],
        ["warm_cache", "--top", "2"],
        ["reembed", "--all"],
    ],
)
def test_an_unreachable_database_is_one_line_and_exit_1(args):
    result = manage(*args)
    assert result.returncode == 1
    assert result.stderr.startswith("CommandError: Database unreachable: ") and "127.0.0.1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_option_that_is_not_utf8_is_refused_before_anything(tmp_path):
    result = manage("evaluate", "--set", "demo-tune", "--collection", os.fsdecode(b"hr\xff"))
    assert result.returncode == 1
    assert result.stderr.strip() == r"CommandError: 'hr\udcff' is not text (not UTF-8, or it holds a NUL character)."


@pytest.mark.django_db
def test_a_database_error_part_way_is_one_line(monkeypatch, tmp_path):
    def lost(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly\n\tThis probably means the server died")

    monkeypatch.setattr("rag.management.commands.warm_cache.Command._check_collections", lost)
    queries = tmp_path / "queries.txt"
    queries.write_text("What is a lambda?\n", encoding="utf-8")
    with pytest.raises(CommandError) as raised:
        call_command("warm_cache", "--file", str(queries), stdout=StringIO(), stderr=StringIO())
    assert str(raised.value) == (
        "Database error: server closed the connection unexpectedly This probably means the server died"
    )
