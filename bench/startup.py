"""The first question after ``make run``: the development server as make run starts it.

``python -m bench startup``

Starts ``manage.py runserver`` (with its autoreloader, as ``make run`` does) on a free loopback
port, twice, on the database as it is (the demo corpus is ingested first when it is empty):

1. the first question is asked the moment the server answers ``GET /health/live``;
2. the first question is asked once the server has logged that the local model is loaded.

Each first question is compared, in the same run, with five later ones (new questions, cache
bypassed, so each is embedded and retrieved afresh). Goal: a first question answered in under a
second once the server is up, i.e. not waiting for the model as it did (about 10 s). The questions
carry an API key issued for the run (revoked at the end); the throttles keep their settings. The
questions' embeddings, query log rows and cache counts are taken back afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

from ragsite.liveserver import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
LOADED = "local embedding model loaded"
LATER = [
    "How does the with statement work?",
    "What is a lambda expression?",
    "What does the global statement do?",
    "How do I raise an exception?",
    "What is slicing?",
]


def ask(base: str, key: str, question: str) -> float:
    # Never asked before, so that neither cache (answers, embeddings) spares the model.
    question = f"{question} ({os.getpid()}-{time.monotonic_ns()})"
    started = time.perf_counter()
    response = requests.post(
        f"{base}/api/query",
        json={"question": question, "use_cache": False},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{question!r} answered {response.status_code}: {response.text[:200]}")
    return elapsed


def start_and_ask(key: str, log_path: Path, *, wait_for_model: bool) -> dict[str, float]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while True:
            if process.poll() is not None or time.monotonic() - started > 180:
                raise SystemExit(f"runserver did not start: {log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{base}/health/live", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.05)
        up_s = time.monotonic() - started
        if wait_for_model:
            while LOADED not in log_path.read_text():
                if time.monotonic() - started > 180:
                    raise SystemExit(f"the model was never reported loaded: {log_path.read_text()[-2000:]}")
                time.sleep(0.05)
        asked_s = time.monotonic() - started
        first_ms = ask(base, key, "What does the yield statement do?")
        later_ms = [ask(base, key, question) for question in LATER]
    finally:
        stop(process)
    loaded = [line for line in log_path.read_text().splitlines() if LOADED in line]
    return {
        "server_up_s": up_s,
        "asked_at_s": asked_s,
        "first_ms": first_ms,
        "later_median_ms": statistics.median(later_ms),
        "model_reported_loaded": bool(loaded),
    }


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="python -m bench startup").parse_args(argv)
    import io

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import F

    from rag.models import ApiKey, CacheCounter, CachedEmbedding, Chunk, Collection, QueryLog

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    call_command("ingest", "--demo", "--if-empty", "--no-progress", stdout=io.StringIO())
    corpus = Collection.objects.get(name="default")
    print(
        f"corpus: collection 'default', {corpus.documents.count()} documents, "
        f"{Chunk.objects.filter(collection=corpus).count()} chunks"
    )
    key_row, key = ApiKey.issue(name="bench startup")
    last_embedding = CachedEmbedding.objects.order_by("-id").values_list("id", flat=True).first() or 0
    last_log = QueryLog.objects.order_by("-id").values_list("id", flat=True).first() or 0
    counters = dict(CacheCounter.objects.values_list("name", "value"))
    connection.close()
    runs = {}
    try:
        for name, wait in (("immediately", False), ("after_model_loaded", True)):
            runs[name] = start_and_ask(key, ROOT / "var" / f"bench-startup-{os.getpid()}.log", wait_for_model=wait)
    finally:
        key_row.revoke()
        CachedEmbedding.objects.filter(id__gt=last_embedding).delete()
        QueryLog.objects.filter(id__gt=last_log).delete()
        for name, value in CacheCounter.objects.values_list("name", "value"):  # the bypasses it counted
            CacheCounter.objects.filter(name=name).update(value=F("value") - (value - counters.get(name, 0)))
        (ROOT / "var" / f"bench-startup-{os.getpid()}.log").unlink(missing_ok=True)
    for name, run in runs.items():
        print(
            f"first question asked {name.replace('_', ' ')} ({run['asked_at_s']:.1f} s after start, server up at "
            f"{run['server_up_s']:.1f} s): {run['first_ms']:.0f} ms; five later questions: median "
            f"{run['later_median_ms']:.0f} ms; ratio {run['first_ms'] / run['later_median_ms']:.1f}x"
        )
    after = runs["after_model_loaded"]
    summary = {
        "corpus": "default (demo)",
        "server_up_s": round(runs["immediately"]["server_up_s"], 2),
        "first_question_immediately_ms": round(runs["immediately"]["first_ms"]),
        "first_question_immediately_asked_at_s": round(runs["immediately"]["asked_at_s"], 2),
        "model_loaded_at_s": round(after["asked_at_s"], 2),
        "first_question_after_load_ms": round(after["first_ms"]),
        "later_question_median_ms": round(after["later_median_ms"]),
        "first_over_later_ratio": round(after["first_ms"] / after["later_median_ms"], 2),
        "goal_first_question_under_1s_met": after["first_ms"] < 1000,
        "load_average_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    print(json.dumps(summary))
    return 0
