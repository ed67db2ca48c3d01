"""The stored settings are live: every process applies an admin change within 2 seconds.

The cross-process test commits its changes (another process cannot see a test's transaction), so
it runs without the ``db`` fixture and puts everything back itself.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.forms.models import model_to_dict
from django.test import Client

from rag.ingestion import ingest_items
from rag.models import CacheCounter, CachedAnswer, Collection, QueryLog
from rag.sources import SourceItem
from resilience import config, live, orders
from resilience.breaker import clear_registry
from resilience.client import get_client, reset_client
from resilience.models import (
    BreakerCommand,
    BreakerReport,
    BreakerSettings,
    JobSettings,
    PoolSettings,
    ProviderSettings,
)

BASE_DIR = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("fresh_settings")


@pytest.mark.django_db
def test_current_returns_the_stored_rows():
    BreakerSettings.objects.update(failure_threshold=11)
    ProviderSettings.objects.update(generation_backend="ollama", generation_model="qwen2.5")
    live.refresh()
    current = config.current()
    assert current.breaker.failure_threshold == 11
    assert current.provider.generation_model == "qwen2.5"
    assert current.pool == config.section_from_env(config.PoolConfig)


@pytest.mark.django_db
def test_an_override_still_takes_precedence():
    BreakerSettings.objects.update(failure_threshold=11)
    forced = config.replace(config.RuntimeConfig(), breaker={"failure_threshold": 2})
    config.override(forced)
    try:
        assert config.current() is forced
    finally:
        config.override(None)
    live.refresh()
    assert config.current().breaker.failure_threshold == 11


@pytest.mark.django_db
def test_a_change_is_seen_at_the_next_check_without_being_told(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(live.live, "timer", lambda: clock[0])
    live.refresh()
    BreakerSettings.objects.update(window_size=42)
    assert config.current().breaker.window_size == 10  # checked less than a second ago
    clock[0] += live.CHECK_SECONDS
    assert config.current().breaker.window_size == 42


@pytest.mark.django_db
def test_missing_tables_fall_back_to_the_environment_and_log_once(caplog):
    live.live.forget()
    with connection.cursor() as cursor:  # as before `migrate`; rolled back with the test
        cursor.execute("ALTER TABLE resilience_breakersettings RENAME TO resilience_breakersettings_away")
    with caplog.at_level(logging.INFO, logger="resilience.live"):
        assert config.current() == config.env_config()
        live.refresh()
        assert config.current() == config.env_config()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "using the environment's" in warnings[0].getMessage()
    # The caller's transaction is intact: the failed read ran in a savepoint.
    assert ProviderSettings.objects.count() == 1
    live.live.forget()


@pytest.mark.django_db
def test_a_stored_value_out_of_range_is_clamped_rather_than_failing_every_call(fake_ollama, caplog):
    """A row saved before the limits existed, or edited in SQL: a timeout of 1e23 s used to make
    every call to Ollama fail with OverflowError (timestamp out of range for platform time_t)."""
    PoolSettings.objects.update(connect_timeout=1e23, read_timeout=1e23, backoff_max=float("inf"), max_retries=-4)
    BreakerSettings.objects.update(recovery_timeout=1e23)
    ProviderSettings.objects.update(
        ollama_base_url=fake_ollama.url, keep_alive="99999999999999999999h", embedding_batch_size=100_000_000
    )
    JobSettings.objects.update(retry_delay_seconds=float("nan"))
    reset_client()
    clear_registry()
    try:
        with caplog.at_level(logging.WARNING, logger="resilience.models.base"):
            live.refresh()
            current = config.current()
        assert (current.pool.connect_timeout, current.pool.read_timeout) == (3600, 3600)  # the maximum
        assert (current.pool.backoff_max, current.pool.max_retries) == (10.0, 3)  # not a number, below 0: defaults
        assert current.breaker.recovery_timeout == 3600
        assert (current.provider.keep_alive, current.provider.embedding_batch_size) == ("24h", 4096)
        assert current.jobs.retry_delay_seconds == 10.0
        assert "settings: pool read_timeout=1e+23 is out of range; using 3600" in caplog.text
        assert len(get_client().embed(["When are the boilers serviced?"], "all-minilm")) == 1
    finally:
        reset_client()
        clear_registry()


def test_before_the_first_read_callers_wait_for_it_and_after_it_never(monkeypatch):
    state = live.LiveSettings()
    entered, release = threading.Event(), threading.Event()
    stored = config.replace(config.RuntimeConfig(), breaker={"window_size": 3})

    def slow_refresh(now: float) -> None:
        entered.set()
        release.wait(5)
        state.config = stored

    monkeypatch.setattr(state, "_refresh", slow_refresh)
    results: list[Any] = []

    def call() -> None:
        results.append(state.source())

    first = threading.Thread(target=call)
    first.start()
    assert entered.wait(5)
    second = threading.Thread(target=call)
    second.start()
    second.join(0.2)
    assert second.is_alive()  # waiting for the first read rather than using the environment's
    release.set()
    first.join(5)
    second.join(5)
    assert results == [stored, stored]

    entered.clear()
    release.clear()
    state.invalidate()
    first = threading.Thread(target=call)
    first.start()
    assert entered.wait(5)
    assert state.source() is stored  # a refresh in progress holds nobody up once there is a config
    release.set()
    first.join(5)


def test_an_unreachable_database_leaves_the_environment_in_force(tmp_path):
    script = (
        "import django, json, time; django.setup()\n"
        "from resilience import config\n"
        "started = time.perf_counter(); cfg = config.current(); again = config.current()\n"
        "print(json.dumps([cfg.breaker.failure_threshold, again == cfg, time.perf_counter() - started]))\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ragsite.settings",
        "DATABASE_URL": f"postgresql://postgres@/ragsite?host={tmp_path}",  # no server there
        "RAGSITE_BREAKER_FAILURE_THRESHOLD": "8",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=BASE_DIR, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    threshold, same, seconds = json.loads(result.stdout.strip().splitlines()[-1])
    assert threshold == 8 and same and seconds < 1
    assert result.stderr.count("cannot read them from the database") == 1


# ANOTHER PROCESS

WORKER = """
import itertools, json, sys, time
import django
django.setup()
from django.test import Client

client = Client()
for i in itertools.count():
    # A new question each time, so no cached answer hides what the configuration does.
    question = f"When are the boilers serviced? (live check {i})"
    payload = json.dumps({"question": question, "collection": "live-check"})
    response = client.post("/api/query", payload, content_type="application/json")
    body = response.json()
    print(json.dumps({"t": time.time(), "status": response.status_code, "generator": body.get("generator"),
                      "degraded_reason": body.get("degraded_reason")}), flush=True)
    time.sleep(0.05)
"""


class Worker:
    """A second process answering questions in a loop; its answers arrive on a queue."""

    def __init__(self, log: Path) -> None:
        settings = connection.settings_dict
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "ragsite.settings",
            "DATABASE_URL": f"postgresql://{settings['USER']}@/{settings['NAME']}?host={settings['HOST']}",
            "RAGSITE_LOG_LEVEL": "WARNING",
        }
        self.log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER], env=env, cwd=BASE_DIR, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self.answers: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.answers.put(json.loads(line))

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], *, after: float, timeout: float) -> dict[str, Any]:
        """The first answer given after ``after`` (wall clock) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                answer = self.answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if answer["t"] > after and predicate(answer):
                return answer
        raise AssertionError(f"no such answer within {timeout} s; worker log: {self.log.name}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def committed(django_db_setup, django_db_blocker) -> Iterator[Client]:
    """A staff user's client on committed data (and a small collection); restores every row it changes."""
    from django.contrib.auth import get_user_model

    with django_db_blocker.unblock():
        report = ingest_items(
            [
                SourceItem("live:boilers", b"The boilers are serviced every October.", "text/plain", "Boilers"),
                SourceItem("live:parking", b"Staff park behind building B.", "text/plain", "Parking"),
            ],
            collection_name="live-check",
        )
        assert not report.failures and not report.aborted
        provider = model_to_dict(ProviderSettings.load())
        counters = dict(CacheCounter.objects.values_list("name", "value"))
        newest_command = BreakerCommand.objects.order_by("-id").values_list("id", flat=True).first() or 0
        user = get_user_model().objects.create_superuser("live-operator", "op@example.com", "unused-password-1")
        client = Client()
        client.force_login(user)
        try:
            yield client
        finally:
            ProviderSettings.objects.filter(pk=1).update(**provider)
            BreakerCommand.objects.filter(id__gt=newest_command).delete()
            QueryLog.objects.filter(question__contains="(live check ").delete()
            CachedAnswer.objects.filter(question__contains="(live check ").delete()
            CacheCounter.objects.exclude(name__in=counters).delete()
            for name, value in counters.items():
                CacheCounter.objects.filter(name=name).update(value=value)
            user.delete()
            Collection.objects.filter(name="live-check").delete()
            orders.sync(now=True)
            BreakerReport.objects.filter(host=orders.HOST, pid=os.getpid()).delete()
            clear_registry()


@pytest.mark.slow
def test_another_process_applies_admin_changes_within_2_seconds(committed, fake_ollama, tmp_path):
    client = committed
    worker = Worker(tmp_path / "worker.log")
    try:
        worker.wait_for(lambda a: a["status"] == 200, after=0, timeout=90)  # the model is loaded

        # A settings change: answers now come from Ollama.
        data = {k: v for k, v in model_to_dict(ProviderSettings.load()).items() if k != "id"}
        data.update(generation_backend="ollama", generation_model="llama3.2", ollama_base_url=fake_ollama.url)
        response = client.post("/admin/resilience/providersettings/1/change/", data)
        assert response.status_code == 302, response.context["adminform"].form.errors
        saved = time.time()
        answer = worker.wait_for(lambda a: a["generator"] == "ollama", after=saved, timeout=5)
        assert answer["t"] - saved < 2

        # Force open: the worker's next answers degrade without calling Ollama.
        def chat_reports():
            return BreakerReport.objects.filter(breaker="chat", pid=worker.process.pid)

        deadline = time.monotonic() + 5
        while not chat_reports().exists():  # the worker reports its breakers every 2 s
            assert time.monotonic() < deadline, "the worker never reported its chat breaker"
            time.sleep(0.1)
        selected = [str(pk) for pk in chat_reports().values_list("pk", flat=True)]
        changelist = "/admin/resilience/breakerreport/"
        response = client.post(changelist, {"action": "force_open", "_selected_action": selected})
        assert response.status_code == 302
        forced = time.time()
        answer = worker.wait_for(lambda a: "circuit open" in (a["degraded_reason"] or ""), after=forced, timeout=5)
        assert answer["t"] - forced < 2 and answer["status"] == 200

        deadline = time.monotonic() + 5
        while chat_reports().get().state != "open":  # the admin list shows it too
            assert time.monotonic() < deadline, "the worker never reported the open breaker"
            time.sleep(0.1)

        # Reset: answers come from Ollama again.
        response = client.post(changelist, {"action": "reset", "_selected_action": selected})
        assert response.status_code == 302
        reset = time.time()
        answer = worker.wait_for(
            lambda a: a["generator"] == "ollama" and not a["degraded_reason"], after=reset, timeout=5
        )
        assert answer["t"] - reset < 2
    finally:
        worker.stop()
        BreakerReport.objects.filter(pid=worker.process.pid).delete()
