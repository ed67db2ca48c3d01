"""Editing the settings singletons through the admin, as a logged-in staff user."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.forms.models import model_to_dict

from rag.ingestion import ingest_items
from rag.models import Chunk, Collection, Document
from rag.sources import SourceItem
from resilience import config
from resilience.models import BreakerSettings, CacheSettings, JobSettings, PoolSettings, ProviderSettings, SettingsRow

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_settings")]


def change_url(model: type[SettingsRow]) -> str:
    return f"/admin/resilience/{model._meta.model_name}/1/change/"


def form_data(model: type[SettingsRow], **changes: Any) -> dict[str, Any]:
    """The change form as the browser would post it: every field, some of them changed."""
    row = model.load()
    data = {name: value for name, value in model_to_dict(row).items() if name != "id"}
    data.update(changes)
    return {name: value for name, value in data.items() if value is not False}  # unticked boxes are absent


def post(client, model: type[SettingsRow], **changes: Any):
    return client.post(change_url(model), form_data(model, **changes))


def test_it_saves_a_valid_edit_and_applies_it_at_once(admin_client):
    response = post(admin_client, BreakerSettings, failure_threshold=7, recovery_timeout=12.5)
    assert response.status_code == 302, response.context["adminform"].form.errors
    row = BreakerSettings.objects.get()
    assert (row.failure_threshold, row.recovery_timeout) == (7, 12.5)
    assert config.current().breaker.failure_threshold == 7
    assert config.current().breaker.recovery_timeout == 12.5


def test_retry_statuses_become_a_tuple(admin_client):
    response = post(admin_client, PoolSettings, retry_statuses="503, 429", read_timeout=3)
    assert response.status_code == 302
    assert config.current().pool.retry_statuses == (503, 429)
    assert config.current().pool.read_timeout == 3.0


FRACTION = "Must be greater than 0 and at most 1."
HUGE = "99999999999999999999999"
INVALID = [
    (BreakerSettings, {"failure_threshold": 0}, "failure_threshold", "Must be at least 1."),
    (BreakerSettings, {"failure_rate_threshold": 0}, "failure_rate_threshold", FRACTION),
    (
        BreakerSettings,
        {"failure_rate_threshold": 1.5},
        "failure_rate_threshold",
        "Must be greater than 0 and at most 1.",
    ),
    (BreakerSettings, {"window_size": 0}, "window_size", "Must be at least 1."),
    (BreakerSettings, {"recovery_timeout": 0}, "recovery_timeout", "Must be greater than 0."),
    (BreakerSettings, {"half_open_max_calls": -1}, "half_open_max_calls", "Must be at least 1."),
    (BreakerSettings, {"success_threshold": 0}, "success_threshold", "Must be at least 1."),
    (BreakerSettings, {"slow_call_seconds": -1}, "slow_call_seconds", "Must be 0 or more."),
    (PoolSettings, {"pool_maxsize": 0}, "pool_maxsize", "Must be at least 1."),
    (PoolSettings, {"pool_connections": 0}, "pool_connections", "Must be at least 1."),
    (PoolSettings, {"connect_timeout": 0}, "connect_timeout", "Must be greater than 0."),
    (PoolSettings, {"read_timeout": -2}, "read_timeout", "Must be greater than 0."),
    (PoolSettings, {"max_retries": -1}, "max_retries", "Must be 0 or more."),
    (PoolSettings, {"backoff_max": 0}, "backoff_max", "Must be greater than 0."),
    (PoolSettings, {"retry_budget_ratio": 1.5}, "retry_budget_ratio", "Must be between 0 and 1."),
    (PoolSettings, {"retry_statuses": "429,five"}, "retry_statuses", "List HTTP statuses from 400 to 599"),
    (PoolSettings, {"retry_statuses": "200"}, "retry_statuses", "List HTTP statuses from 400 to 599"),
    (CacheSettings, {"similarity_threshold": 0}, "similarity_threshold", FRACTION),
    (CacheSettings, {"similarity_threshold": 1.01}, "similarity_threshold", FRACTION),
    (CacheSettings, {"max_entries": 0}, "max_entries", "Must be at least 1."),
    (CacheSettings, {"ttl_seconds": 0}, "ttl_seconds", "Must be at least 1."),
    (ProviderSettings, {"ollama_base_url": "ftp://ollama:11434"}, "ollama_base_url", "must start with http://"),
    (ProviderSettings, {"ollama_base_url": "http://"}, "ollama_base_url", "Enter a well-formed URL"),
    (ProviderSettings, {"ollama_base_url": "http://ollama:99999"}, "ollama_base_url", "The port must be a number"),
    (ProviderSettings, {"ollama_base_url": "http://oll ama"}, "ollama_base_url", "Enter a URL without spaces"),
    (ProviderSettings, {"ollama_base_url": "http://o:1/?x=1"}, "ollama_base_url", "Enter a well-formed URL"),
    (ProviderSettings, {"ollama_base_url": "http://169.254.169.254/"}, "ollama_base_url", "Link-local and cloud"),
    (ProviderSettings, {"ollama_base_url": "http://[fd00:ec2::254]:80"}, "ollama_base_url", "Link-local and cloud"),
    (ProviderSettings, {"ollama_base_url": "http://metadata.google.internal"}, "ollama_base_url", "Link-local"),
    (
        ProviderSettings,
        {"generation_backend": "ollama", "generation_model": ""},
        "generation_model",
        "Name the Ollama chat model",
    ),
    (
        ProviderSettings,
        {"embedding_backend": "ollama", "embedding_model": " "},
        "embedding_model",
        "Name the Ollama embedding model",
    ),
    (ProviderSettings, {"embedding_model": "bge-small"}, "embedding_model", "The local backend only has"),
    (ProviderSettings, {"embedding_backend": "openai"}, "embedding_backend", "Select a valid choice."),
    (ProviderSettings, {"keep_alive": "soon"}, "keep_alive", "Use a duration such as"),
    (ProviderSettings, {"num_ctx": 0}, "num_ctx", "Must be at least 1."),
    (ProviderSettings, {"embedding_batch_size": 0}, "embedding_batch_size", "Must be at least 1."),
    (BreakerSettings, {"window_size": "ten"}, "window_size", "Enter a whole number."),
    # Malformed or out of reach: a form error, never a 500 nor a value that breaks every call later.
    (ProviderSettings, {"ollama_base_url": "http://[::1"}, "ollama_base_url", "Enter a well-formed URL (Invalid IPv6"),
    (ProviderSettings, {"keep_alive": "99999999999999999999h"}, "keep_alive", "At most 24h; use -1"),
    (ProviderSettings, {"embedding_batch_size": 100000000}, "embedding_batch_size", "Must be at most 4096."),
    (ProviderSettings, {"num_ctx": HUGE}, "num_ctx", "Must be at most 1048576."),
    (BreakerSettings, {"failure_threshold": HUGE}, "failure_threshold", "Must be at most 1000."),
    (BreakerSettings, {"recovery_timeout": HUGE}, "recovery_timeout", "Must be at most 3600."),
    (BreakerSettings, {"recovery_timeout": "inf"}, "recovery_timeout", "Enter a number."),
    (PoolSettings, {"connect_timeout": HUGE}, "connect_timeout", "Must be at most 3600."),
    (PoolSettings, {"read_timeout": HUGE}, "read_timeout", "Must be at most 3600."),
    (PoolSettings, {"read_timeout": "nan"}, "read_timeout", "Enter a number."),
    (PoolSettings, {"backoff_factor": HUGE}, "backoff_factor", "Must be at most 3600."),
    (PoolSettings, {"backoff_jitter": HUGE}, "backoff_jitter", "Must be at most 3600."),
    (PoolSettings, {"backoff_max": HUGE}, "backoff_max", "Must be at most 3600."),
    (PoolSettings, {"max_retries": 101}, "max_retries", "Must be at most 100."),
    (CacheSettings, {"ttl_seconds": 31536001}, "ttl_seconds", "Must be at most 31536000."),
    (JobSettings, {"retry_delay_seconds": HUGE}, "retry_delay_seconds", "Must be at most 86400."),
    (JobSettings, {"max_attempts": 1001}, "max_attempts", "Must be at most 1000."),
]


@pytest.mark.parametrize(
    ("model", "changes", "field", "message"), INVALID, ids=[f"{m.__name__}-{f}" for m, _, f, _ in INVALID]
)
def test_each_invalid_value_is_refused_with_its_message(admin_client, local_chunks, model, changes, field, message):
    # local_chunks: the embedding model check must not hide the row's own errors.
    before = model_to_dict(model.load())
    response = post(admin_client, model, **changes)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert message in " ".join(errors.get(field, [])), errors
    assert message.split(".")[0] in response.content.decode().replace("&#x27;", "'")
    assert model_to_dict(model.objects.get()) == before


def test_history_shows_old_and_new_values(admin_client):
    post(admin_client, BreakerSettings, failure_threshold=8, enabled=False)
    page = admin_client.get(change_url(BreakerSettings).replace("change/", "history/")).content.decode()
    assert "Failure threshold: 5 → 8" in page
    assert "Enabled: on → off" in page


def test_every_field_says_what_it_does_and_its_default(admin_client):
    for model in (ProviderSettings, BreakerSettings, PoolSettings, CacheSettings):
        for f in model._meta.concrete_fields:
            if f.editable:
                assert "Default: " in f.help_text, f"{model.__name__}.{f.name}"
    page = admin_client.get(change_url(PoolSettings)).content.decode()
    assert "Default: 429,502,503,504." in page
    assert "Default: 20." in page
    assert "Default: 30. At most 3600." in page  # the read timeout


def test_a_value_at_its_limit_is_saved(admin_client):
    response = post(admin_client, PoolSettings, read_timeout=3600, backoff_max=3600)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert config.current().pool.read_timeout == 3600


def test_a_settings_row_can_be_neither_added_nor_deleted(admin_client):
    assert admin_client.get("/admin/resilience/breakersettings/add/").status_code == 403
    assert admin_client.get("/admin/resilience/breakersettings/1/delete/").status_code == 403
    response = admin_client.get("/admin/resilience/breakersettings/")
    assert response.status_code == 302 and response.url == change_url(BreakerSettings)


def test_a_missing_row_is_recreated_from_the_environment():
    BreakerSettings.objects.all().delete()
    row = BreakerSettings.load()
    assert row.to_config() == config.section_from_env(config.BreakerConfig)


# Changing the embedding model


@pytest.fixture
def local_chunks() -> Collection:
    """A collection with chunks embedded by the local model (the demo corpus may hold more)."""
    collection = Collection.objects.create(name="admin-embed-check")
    document = Document.objects.create(
        collection=collection, source="x", title="X", sha256="0", media_type="text/plain"
    )
    Chunk.objects.create(
        collection=collection,
        document=document,
        ordinal=0,
        text="Boilers are serviced in October.",
        embedding=np.ones(384, dtype=np.float32) / np.sqrt(384),
        embedding_model="local/all-MiniLM-L6-v2",
    )
    return collection


def test_an_embedding_model_change_is_refused_while_old_chunks_exist(admin_client, local_chunks):
    response = post(admin_client, ProviderSettings, embedding_backend="ollama", embedding_model="all-minilm")
    assert response.status_code == 200
    error = " ".join(response.context["adminform"].form.errors["embedding_model"])
    assert "admin-embed-check: 1 chunks of local/all-MiniLM-L6-v2" in error
    assert "python manage.py reembed --all --backend ollama --model all-minilm" in error
    assert ProviderSettings.objects.get().embedding_backend == "local"


def test_the_change_is_allowed_when_the_operator_will_reembed(admin_client, local_chunks):
    response = post(
        admin_client, ProviderSettings, embedding_backend="ollama", embedding_model="all-minilm", reembed_later="on"
    )
    assert response.status_code == 302
    assert config.current().provider.embedder_name == "ollama/all-minilm"
    page = admin_client.get(response.url, follow=True).content.decode()
    assert "reembed --all" in page  # the warning names the command to run


def test_the_change_is_allowed_once_every_chunk_is_reembedded(
    admin_client, local_chunks, fake_ollama, resilience_config
):
    resilience_config(provider={"ollama_base_url": fake_ollama.url})
    Chunk.objects.exclude(collection=local_chunks).delete()  # the demo corpus, rolled back after the test
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending trigger events: reembed creates an index
    call_command("reembed", "--all", "--backend", "ollama", "--model", "all-minilm", stdout=StringIO())
    response = post(admin_client, ProviderSettings, embedding_backend="ollama", embedding_model="all-minilm")
    assert response.status_code == 302, response.context["adminform"].form.errors


def test_other_provider_fields_can_change_while_old_chunks_exist(admin_client, local_chunks):
    response = post(admin_client, ProviderSettings, generation_backend="ollama", generation_model="llama3.2")
    assert response.status_code == 302
    assert config.current().provider.generation_backend == "ollama"


def test_turning_the_cache_off_stops_lookups_at_the_next_query(admin_client, client):
    items = [SourceItem("mem:boilers", b"The boilers are serviced every October.", "text/plain", "Boilers")]
    assert not ingest_items(items, collection_name="admin-cache-check").failures

    def ask() -> str:
        payload = json.dumps({"question": "When are the boilers serviced?", "collection": "admin-cache-check"})
        return client.post("/api/query", payload, content_type="application/json").json()["cache"]

    assert ask() == "miss"
    assert ask() == "exact"
    assert post(admin_client, CacheSettings, enabled=False).status_code == 302
    assert ask() == "bypass"


def test_a_link_local_ollama_is_saved_only_where_the_servers_allow_it(admin_client, monkeypatch):
    monkeypatch.setenv("RAGSITE_ALLOW_LINK_LOCAL_OLLAMA", "true")
    response = post(admin_client, ProviderSettings, ollama_base_url="http://169.254.10.20:11434")
    assert response.status_code == 302
    assert ProviderSettings.objects.get().ollama_base_url == "http://169.254.10.20:11434"
