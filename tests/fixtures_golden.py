"""A small hand-made collection and golden sets written for it: known answers to evaluate and
calibrate against."""

from __future__ import annotations

import json

import pytest

from rag.ingestion import ingest_items
from rag.sources import SourceItem

COLLECTION = "eval-test"
TEXTS = {
    "boilers": "Boilers\n\nThe boiler room is in the basement. Boilers are serviced every October by the caretaker.",
    "parking": "Parking\n\nStaff parking is behind building B. Visitors park at the front gate near reception.",
    "lunch": "The canteen\n\nThe canteen serves lunch from noon until two in the afternoon, soup on Fridays.",
}


@pytest.fixture
def facilities(resilience_config):
    items = [SourceItem(f"facility:{key}", text.encode(), "text/plain", key) for key, text in TEXTS.items()]
    assert not ingest_items(items, collection_name=COLLECTION).failures


def write_set(tmp_path, rows: list[dict], name: str = "facilities") -> str:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return str(path)
