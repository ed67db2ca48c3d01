"""``manage.py calibrate``: relevance floors chosen from a golden set, and the service declining by them."""

from __future__ import annotations

import json
import random
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from rag.calibration import NO_PASSAGE, Signal, frontier, outcome, recommend
from tests.fixtures_golden import COLLECTION, write_set

pytestmark = pytest.mark.django_db

SET = [
    {"question": "When are the boilers serviced?", "expected": ["facility:boilers"]},
    {"question": "Where do visitors park their cars?", "expected": ["facility:parking"]},
    {"question": "What time does the canteen open for lunch?", "expected": ["facility:lunch"]},
    {"question": "Who won the 2018 football World Cup?", "expected": [], "answerable": False},
    {"question": "How do I bake sourdough bread at home?", "expected": [], "answerable": False},
    {"question": "What is the capital city of Australia?", "expected": [], "answerable": False},
]


def calibrate(*args: str) -> tuple[str, dict]:
    out = StringIO()
    call_command("calibrate", *args, "--collection", COLLECTION, "--no-progress", stdout=out, stderr=StringIO())
    text = out.getvalue()
    return text, json.loads(text.strip().splitlines()[-1])


def ask(client, question: str) -> dict:
    body = {"question": question, "collection": COLLECTION, "use_cache": False}
    return client.post("/api/query", body, content_type="application/json").json()


def test_floors_it_recommends_make_the_service_decline_what_the_documents_cannot_answer(
    facilities,
    tmp_path,
    client,
    settings,
):
    settings.RAGSITE_RELEVANCE_FLOORS = {}  # a model with no floors yet declines nothing
    assert ask(client, "Who won the 2018 football World Cup?")["answerable"] is True

    text, figures = calibrate("--set", write_set(tmp_path, SET))
    assert figures["current"] is None and "none for this model" in text
    chosen = figures["recommended"]
    assert (chosen["declined"], chosen["answerable_declined"], chosen["recall"]) == (3, 0, 1.0)
    assert f"RAGSITE_RELEVANCE_FLOOR={chosen['floor']:.3f}" in text

    settings.RAGSITE_RELEVANCE_FLOORS = {"*": (chosen["floor"], chosen["floor_unknown_words"])}
    declined = ask(client, "Who won the 2018 football World Cup?")
    assert declined["answerable"] is False and declined["sources"]  # the closest passages, still listed
    assert ask(client, "When are the boilers serviced?")["answerable"] is True
    # The current floors are now the recommended ones, and judged the same.
    _, again = calibrate("--set", write_set(tmp_path, SET))
    assert again["current"] == chosen


def signal(similarity: float, answerable: bool, unknown: float = 0.0) -> Signal:
    return Signal(f"q{similarity}", answerable, similarity, unknown)


def test_the_recommended_floors_sit_in_the_middle_of_the_gap_they_leave():
    found = [
        signal(0.20, False),
        signal(0.30, False),
        signal(0.40, True),  # answerable, but less similar than an unanswerable question below
        signal(0.45, False, unknown=1.0),  # words no chunk holds: judged by the upper floor
        signal(0.50, False),
        signal(0.60, True, unknown=1.0),
        signal(0.70, True),
        signal(NO_PASSAGE, False),  # no passage matched: declined whatever the floors
    ]
    # (unanswerable, answerable) declined: declining fewer unanswerable ones for no fewer answerable
    # ones is no choice at all, so those pairs are not listed.
    assert [(o.right, o.wrong) for o in frontier(found)] == [(4, 0), (5, 1)]
    strict = recommend(found, min_precision=1.0)
    assert (strict.right, strict.wrong) == (4, 0)
    # The floor halfway between 0.30 (declined) and 0.40 (kept); the upper floor between 0.45 and 0.60.
    assert (strict.floor, strict.floor_unknown_words) == (0.35, 0.525)
    loose = recommend(found, min_precision=0.8)
    assert (loose.right, loose.wrong) == (5, 1) and loose.floor == 0.6
    assert outcome(found, floor=0.0, floor_unknown_words=0.0).right == 1  # the question with no passage
    assert recommend([signal(0.5, True), signal(0.6, False)], min_precision=0.9) is None


@pytest.mark.parametrize(
    ("rows", "args", "message"),
    [
        (SET[:3], [], "no unanswerable question"),
        (SET[3:], [], "no answerable question"),
        (SET, ["--min-precision", "0"], "--min-precision must be above 0"),
        (SET, ["--k", "0"], "--k must be between 1 and 50"),
    ],
)
def test_a_set_it_cannot_calibrate_from_is_refused_with_the_reason(facilities, tmp_path, rows, args, message):
    with pytest.raises(CommandError, match=message):
        calibrate("--set", write_set(tmp_path, rows), *args)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"question": "Why?\\u0000", "expected": []', "'question' holds a NUL character"),
        ('{"question": "\\ud800", "expected": []', "'question' holds a lone surrogate"),
        ('{"question": "' + "x" * 2001 + '", "expected": []', "'question' is longer than 2000 characters"),
        ("[" * 100_000, r"not JSON \(nested too deeply\)"),
    ],
)
def test_a_question_that_cannot_be_asked_is_refused_with_its_line(db, tmp_path, line, message):
    path = tmp_path / "tune.jsonl"
    path.write_text(json.dumps(SET[0]) + "\n" + line + ', "answerable": false}\n', encoding="utf-8")
    with pytest.raises(CommandError, match=f"tune.jsonl line 2: {message}"):
        calibrate("--set", str(path))


def test_an_unknown_collection_is_refused(db, tmp_path):
    with pytest.raises(CommandError, match="No collection named 'nowhere'"):
        call_command("calibrate", "--set", write_set(tmp_path, SET), "--collection", "nowhere", stdout=StringIO())


def test_an_ollama_embedding_model_that_cannot_be_reached_is_a_clear_error(ollama_facilities, tmp_path):
    ollama_facilities.set_mode("status", paths=["/api/embed"], status=500, error="model crashed")
    with pytest.raises(CommandError, match="The embedding model 'ollama/all-minilm' cannot be reached"):
        call_command("calibrate", "--set", write_set(tmp_path, SET), "--collection", "facilities", stdout=StringIO())


def test_the_frontier_counts_what_the_declining_rule_declines():
    # Every pair of floors judged by the rule itself, against the frontier's counting.
    rng = random.Random(7)
    found = [
        signal(round(rng.uniform(0.1, 0.8), 3), rng.random() < 0.7, unknown=rng.choice([0.0, 0.25, 0.5, 1.0]))
        for _ in range(60)
    ]
    found.append(signal(NO_PASSAGE, True))
    levels = sorted({0.0, *(round(s.similarity + 0.0005, 4) for s in found if s.similarity > NO_PASSAGE)})
    fewest: dict[int, int] = {}
    for i, floor in enumerate(levels):
        for upper in levels[i:]:
            judged = outcome(found, floor=floor, floor_unknown_words=upper)
            fewest[judged.right] = min(judged.wrong, fewest.get(judged.right, len(found)))
    rows = frontier(found)
    assert [(o.right, o.wrong) for o in rows] == [
        (right, wrong)
        for right, wrong in sorted(fewest.items())
        if not any(w <= wrong for r, w in fewest.items() if r > right)
    ]
    for row in rows:  # and each row's (centred) floors do what the row says
        assert outcome(found, floor=row.floor, floor_unknown_words=row.floor_unknown_words) == row
