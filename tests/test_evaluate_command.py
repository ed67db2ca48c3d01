"""``manage.py evaluate``: the figures of a small hand-made set whose answers are known."""

from __future__ import annotations

import json
import stat
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from rag.evaluation import first_relevant_rank, summarise
from rag.models import EvalRun, Feedback, QueryLog
from tests.fixtures_golden import COLLECTION, write_set

pytestmark = pytest.mark.django_db


def evaluate(*args: str) -> tuple[str, dict]:
    out = StringIO()
    call_command("evaluate", *args, "--collection", COLLECTION, "--no-progress", stdout=out, stderr=StringIO())
    text = out.getvalue()
    return text, json.loads(text.strip().splitlines()[-1])


KNOWN = [
    {"question": "When are the boilers serviced?", "expected": ["facility:boilers"], "answer_contains": ["October"]},
    {"question": "Where do visitors park their cars?", "expected": ["Parking"]},  # by title
    {"question": "When does the canteen serve lunch?", "expected": ["facility:library"]},  # no such document
]


def test_it_reports_the_known_figures_per_question_and_overall(facilities, tmp_path):
    text, figures = evaluate("--set", write_set(tmp_path, KNOWN), "--k", "3")

    assert figures["questions"] == 3 and figures["answerable"] == 3
    assert figures["hit@1"] == pytest.approx(2 / 3, abs=1e-3)
    assert figures["hit@5"] == pytest.approx(2 / 3, abs=1e-3)
    assert figures["mrr"] == pytest.approx(2 / 3, abs=1e-3)
    assert figures["ndcg@10"] == pytest.approx(2 / 3, abs=1e-3)
    assert figures["answer_contains"] == 1.0
    assert figures["latency_ms"]["p95"] >= figures["latency_ms"]["p50"] > 0
    assert {"embed", "retrieve"} <= set(figures["stages_ms"])
    lines = text.splitlines()
    assert any(line.split()[0] == "miss" and "canteen" in line for line in lines)
    assert any(line.split()[0] == "1" and "boilers" in line for line in lines)
    assert "hit@1" in text and "66.7 %" in text

    run = EvalRun.objects.get(pk=figures["run"])
    assert run.golden_set == "facilities" and run.collection == COLLECTION and run.k == 3
    assert [r["rank"] for r in run.results] == [1, 1, None]


def test_compare_names_the_questions_that_got_worse_and_better(facilities, tmp_path):
    evaluate("--set", write_set(tmp_path, KNOWN), "--label", "first")
    changed = [
        {**KNOWN[0], "expected": ["facility:nowhere"]},  # was found first, now cannot be
        KNOWN[1],
        {**KNOWN[2], "expected": ["facility:lunch"]},  # was missing, now first
    ]
    text, _ = evaluate("--set", write_set(tmp_path, changed), "--compare", "previous")

    assert "1 better, 1 worse" in text
    assert "worse: When are the boilers serviced?: rank 1 -> not found" in text
    assert "better: When does the canteen serve lunch?: not found -> rank 1" in text


def test_ranks_count_sources_in_the_order_given_and_titles_match_too():
    sources = [{"source": "a", "title": "A"}, {"source": "b", "title": "The B"}, {"source": "c", "title": "C"}]
    assert first_relevant_rank(sources, ["c", "b"]) == 2
    assert first_relevant_rank(sources, ["the b"]) == 2
    assert first_relevant_rank(sources, ["z"]) is None


def test_declining_precision_and_recall_count_each_way_of_being_wrong():
    def result(answerable: bool, declined: bool) -> dict:
        return {
            "answerable": answerable,
            "declined": declined,
            "rank": 1 if answerable else None,
            "kind": "",
            "ms": 1.0,
            "timings": {},
        }

    figures = summarise(
        [result(False, True), result(False, True), result(False, False), result(True, True), result(True, False)]
    )
    assert figures["decline_precision"] == pytest.approx(2 / 3, abs=1e-3)  # one answerable question declined
    assert figures["decline_recall"] == pytest.approx(2 / 3, abs=1e-3)  # one unanswerable one answered


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "Where?", "expected": ["x"]}\nnot json\n', "line 2: not JSON"),
        ('{"question": "", "expected": ["x"]}\n', "line 1: 'question' must be a non-empty string"),
        ('{"question": "Where?"}\n', "line 1: an answerable question needs 'expected'"),
        ('{"question": "Where?", "expected": [], "answerable": "no"}\n', "'answerable' must be true or false"),
        ("\n# nothing\n", "holds no questions"),
        ('{"question": "Where?\\u0000", "expected": ["x"]}\n', "line 1: 'question' holds a NUL character"),
        ('{"question": "Where?\\ud800", "expected": ["x"]}\n', "line 1: 'question' holds a lone surrogate"),
        ('{"question": "' + "why " * 501 + '", "expected": ["x"]}\n', "line 1: 'question' is longer than 2000"),
        ('{"question": "Where?", "expected": ["x\\u0000"]}\n', "line 1: 'expected' holds a NUL character"),
        ('{"question": "Where?", "expected": ["x"], "answer_contains": ["\\udfff"]}\n', "'answer_contains' holds a"),
        ("[" * 100_000 + "]" * 100_000 + "\n", r"line 1: not JSON \(nested too deeply\)"),
    ],
)
def test_a_bad_golden_set_is_refused_with_its_line(facilities, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(CommandError, match=message):
        evaluate("--set", str(path))
    assert not EvalRun.objects.exists()


def test_unknown_sets_collections_and_runs_are_refused(facilities, tmp_path):
    with pytest.raises(CommandError, match=r"No golden set 'nope'.*demo-heldout"):
        evaluate("--set", "nope")
    with pytest.raises(CommandError, match="No collection named 'missing'"):
        call_command("evaluate", "--set", write_set(tmp_path, KNOWN), "--collection", "missing", stdout=StringIO())
    with pytest.raises(CommandError, match="No evaluation run #999999"):
        evaluate("--set", write_set(tmp_path, KNOWN), "--compare", "999999")
    with pytest.raises(CommandError, match="--k must be between 1 and 50"):
        evaluate("--set", write_set(tmp_path, KNOWN), "--k", "0")


def test_the_admin_lists_runs_with_a_chart_and_the_questions_that_regressed(admin_client, facilities, tmp_path):
    _, first = evaluate("--set", write_set(tmp_path, KNOWN), "--label", "before")
    changed = [{**KNOWN[0], "expected": ["facility:nowhere"]}, *KNOWN[1:]]
    _, second = evaluate("--set", write_set(tmp_path, changed), "--label", "after")

    listing = admin_client.get("/admin/rag/evalrun/").content.decode()
    assert 'class="eval-chart"' in listing and "<polyline" in listing
    assert "before" in listing and "after" in listing and "66.7 %" in listing and "33.3 %" in listing
    detail = admin_client.get(f"/admin/rag/evalrun/{second['run']}/change/").content.decode()
    assert f"Against run #{first['run']}" in detail
    assert "When are the boilers serviced?" in detail and "not found" in detail


def test_the_last_runs_figures_are_prometheus_gauges(client, facilities, tmp_path):
    evaluate("--set", write_set(tmp_path, KNOWN), "--k", "3")
    text = client.get("/metrics", HTTP_ACCEPT="text/plain").content.decode()
    assert 'ragsite_eval_hit_ratio{k="1",set="facilities"} 0.6667' in text
    assert 'ragsite_eval_hit_ratio{k="5",set="facilities"} 0.6667' in text
    assert 'ragsite_eval_mrr{set="facilities"} 0.6667' in text
    assert 'ragsite_eval_latency_seconds{quantile="0.95",set="facilities"}' in text


def test_compare_takes_only_a_run_id_or_previous(facilities, tmp_path):
    for bad in ("²", "99999999999999999999", "1.5"):
        with pytest.raises(CommandError, match="--compare takes a run id or 'previous'"):
            evaluate("--set", write_set(tmp_path, KNOWN), "--compare", bad)
    assert not EvalRun.objects.exists()


@pytest.fixture
def judged_feedback(db):
    log = QueryLog.objects.create(
        question="Where is the boiler room?", question_hash="h", collection=COLLECTION, cache="miss", latency_ms=1.0
    )
    Feedback.objects.create(query=log, rating=Feedback.Rating.DOWN, expected_source="facility:boilers")


def export(path, *args: str) -> str:
    return call_command("evaluate", "--export-feedback", str(path), *args, stdout=StringIO())


def test_export_feedback_never_overwrites_a_file_unless_forced(judged_feedback, tmp_path):
    path = tmp_path / "feedback.jsonl"
    path.write_text("my own golden set\n", encoding="utf-8")
    path.chmod(0o640)  # shared with a group, say
    with pytest.raises(CommandError, match=r"feedback\.jsonl already exists: give --force to replace it"):
        export(path)
    assert path.read_text(encoding="utf-8") == "my own golden set\n"

    assert "Wrote 1 golden-set line(s)" in export(path, "--force")
    assert json.loads(path.read_text(encoding="utf-8"))["expected"] == ["facility:boilers"]
    assert [p.name for p in tmp_path.iterdir()] == ["feedback.jsonl"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the file replaced keeps its permissions


def test_export_feedback_refuses_an_unknown_collection(judged_feedback, tmp_path):
    with pytest.raises(CommandError, match="No collection named 'nosuch'"):
        export(tmp_path / "feedback.jsonl", "--collection", "nosuch")
    assert not list(tmp_path.iterdir())


def test_an_export_that_fails_half_way_leaves_the_old_file(judged_feedback, tmp_path, monkeypatch):
    def disk_full(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("rag.feedback.os.replace", disk_full)
    path = tmp_path / "feedback.jsonl"
    path.write_text("the old lines\n", encoding="utf-8")
    with pytest.raises(CommandError, match=r"Cannot write .*feedback\.jsonl: No space left on device"):
        export(path, "--force")
    assert path.read_text(encoding="utf-8") == "the old lines\n"
    assert [p.name for p in tmp_path.iterdir()] == ["feedback.jsonl"]
