"""manage.py check refuses configuration mistakes before the first request meets them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent


def check(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "ragsite.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_clean_environment_passes():
    result = check()
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_settings_the_admin_would_refuse_are_refused_at_start_up():
    result = check(OLLAMA_BASE_URL="ftp://ollama:11434", RAGSITE_POOL_RETRY_STATUSES="503,700")
    assert result.returncode != 0
    assert "OLLAMA_BASE_URL: The URL must start with http:// or https://." in result.stderr
    assert "RAGSITE_POOL_RETRY_STATUSES: List HTTP statuses from 400 to 599" in result.stderr


def test_a_missing_metrics_directory_is_named_not_a_traceback(tmp_path):
    result = check(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing"))
    assert result.returncode != 0
    assert f"PROMETHEUS_MULTIPROC_DIR={tmp_path / 'missing'} is not a writable directory" in result.stderr
    assert "Traceback" not in result.stderr


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "ragsite.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_configuration_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip() == f"Configuration error: {message}"


# Each line: the variable, its bad value, the one line that stops the command.
BAD_ENVIRONMENT = [
    (
        "RAGSITE_LOG_LEVEL",
        "LOUD",
        " must be one of ['debug', 'info', 'warning', 'warn', 'error', 'critical', 'notset'], got 'loud'",
    ),
    ("OLLAMA_BASE_URL", "http://[::1", "='http://[::1': Enter a well-formed URL (Invalid IPv6 URL)."),
    ("RAGSITE_SETTINGS_SOURCE", "bogus", " must be one of ['database', 'environment'], got 'bogus'"),
    ("RAGSITE_POOL_READ_TIMEOUT", "inf", " must be a finite number, got 'inf'"),
    ("RAGSITE_BREAKER_RECOVERY_TIMEOUT", "inf", " must be a finite number, got 'inf'"),
    ("RAGSITE_JOBS_RETRY_DELAY_SECONDS", "nan", " must be a finite number, got 'nan'"),
    ("RAGSITE_BREAKER_WINDOW_SIZE", "ten", " must be an integer, got 'ten'"),
    (
        "RAGSITE_GENERATION_KEEP_ALIVE",
        "forever",
        "='forever': Use a duration such as 30s, 5m, 1h, 0 (unload at once) or -1 (keep loaded).",
    ),
    ("RAGSITE_RELEVANCE_FLOOR", "nan", " must be a finite number, got 'nan'"),
]


@pytest.mark.parametrize(("variable", "value", "message"), BAD_ENVIRONMENT, ids=[v for v, _, _ in BAD_ENVIRONMENT])
def test_a_bad_value_stops_the_command_with_one_line_naming_the_variable(variable, value, message):
    assert_configuration_error(manage("check", **{variable: value}), variable + message)


# Each line: the variable, a value beyond its limit, the limit used instead, the refusal when the
# environment is the settings in force.
BEYOND_LIMIT = [
    (
        "RAGSITE_BREAKER_FAILURE_THRESHOLD",
        "99999999999999999999999",
        "1000",
        " must be <= 1000, got 99999999999999999999999",
    ),
    (
        "RAGSITE_BREAKER_WINDOW_SIZE",
        "99999999999999999999999",
        "10000",
        " must be <= 10000, got 99999999999999999999999",
    ),
    ("RAGSITE_POOL_MAX_RETRIES", "101", "100", " must be <= 100, got 101"),
    (
        "RAGSITE_CACHE_TTL_SECONDS",
        "99999999999999999999999",
        "31536000",
        " must be <= 31536000, got 99999999999999999999999",
    ),
    ("RAGSITE_JOBS_MAX_ATTEMPTS", "1001", "1000", " must be <= 1000, got 1001"),
    (
        "RAGSITE_GENERATION_NUM_CTX",
        "99999999999999999999999",
        "1048576",
        " must be <= 1048576, got 99999999999999999999999",
    ),
    ("RAGSITE_EMBEDDING_BATCH_SIZE", "100000000", "4096", " must be <= 4096, got 100000000"),
    ("RAGSITE_POOL_CONNECT_TIMEOUT", "99999999999999999999999", "3600", " must be <= 3600, got 1e+23"),
    ("RAGSITE_POOL_READ_TIMEOUT", "7200", "3600", " must be <= 3600, got 7200"),
    (
        "RAGSITE_GENERATION_KEEP_ALIVE",
        "48h",
        "24h",
        "='48h': At most 24h; use -1 to keep the model loaded.",
    ),
]
LIMIT_IDS = [v for v, *_ in BEYOND_LIMIT]


@pytest.mark.parametrize(("variable", "value", "limit", "refusal"), BEYOND_LIMIT, ids=LIMIT_IDS)
def test_a_seed_beyond_its_limit_is_capped_with_a_warning(variable, value, limit, refusal):
    """The variable only seeds the admin's rows: the service starts, with the limit, and says so."""
    result = manage("check", **{variable: value})
    assert result.returncode == 0, result.stderr
    shown = refusal.rsplit("got ", 1)[1] if "got " in refusal else value  # as the refusal shows it
    assert f"(resilience.W001) {variable}={shown} is above its limit; {limit} is used" in result.stderr


@pytest.mark.parametrize(("variable", "value", "limit", "refusal"), BEYOND_LIMIT, ids=LIMIT_IDS)
def test_beyond_its_limit_stops_start_up_when_the_environment_is_the_settings(variable, value, limit, refusal):
    result = manage("check", RAGSITE_SETTINGS_SOURCE="environment", **{variable: value})
    assert_configuration_error(result, variable + refusal)


@pytest.mark.django_db
def test_a_seed_beyond_its_limit_is_seeded_as_the_limit(monkeypatch):
    """A fresh row takes the limit, which the admin's form accepts; environment as source refuses."""
    from resilience import config
    from resilience.checks import row_errors
    from resilience.models import PoolSettings, ProviderSettings

    monkeypatch.setenv("RAGSITE_POOL_READ_TIMEOUT", "7200")
    monkeypatch.setenv("RAGSITE_GENERATION_KEEP_ALIVE", "48h")
    PoolSettings.objects.all().delete()
    ProviderSettings.objects.all().delete()
    pool, provider = PoolSettings.load(), ProviderSettings.load()
    assert (pool.read_timeout, provider.keep_alive) == (3600.0, "24h")
    assert row_errors(pool) == {} and row_errors(provider) == {}
    with pytest.raises(config.EnvError, match="RAGSITE_POOL_READ_TIMEOUT must be <= 3600, got 7200"):
        config.section_from_env(config.PoolConfig, strict=True)


def test_an_unwritable_var_dir_does_not_stop_a_service_on_an_outside_database():
    """Nothing needs RAGSITE_VAR_DIR when DATABASE_URL names the database (/proc: not even root writes)."""
    result = manage("check", RAGSITE_VAR_DIR="/proc/nope", DATABASE_URL="postgres://u:p@127.0.0.1:1/x")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_an_unwritable_var_dir_is_one_line_where_the_embedded_database_needs_it():
    result = manage("warm_cache", "--top", "5", RAGSITE_VAR_DIR="/proc/nope", DATABASE_URL="")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Database unreachable: the embedded database cannot create /proc/nope/run" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_var_dir_that_is_a_file_is_refused(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    assert_configuration_error(
        manage("check", RAGSITE_VAR_DIR=str(afile)), f"RAGSITE_VAR_DIR={afile} is not a directory"
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("RAGSITE_RELEVANCE_FLOOR", "5", "RAGSITE_RELEVANCE_FLOOR must be <= 1, got 5"),
        ("RAGSITE_RELEVANCE_FLOOR_UNKNOWN_WORDS", "-3", "RAGSITE_RELEVANCE_FLOOR_UNKNOWN_WORDS must be >= -1, got -3"),
    ],
)
def test_a_relevance_floor_outside_cosine_similarity_is_refused(variable, value, message):
    assert_configuration_error(check(**{"RAGSITE_RELEVANCE_FLOOR": "0.4", variable: value}), message)


def test_values_at_their_limits_pass():
    result = check(
        RAGSITE_LOG_LEVEL="WARN",
        RAGSITE_POOL_READ_TIMEOUT="3600",
        RAGSITE_BREAKER_FAILURE_THRESHOLD="1000",
        RAGSITE_GENERATION_KEEP_ALIVE="-1",
        RAGSITE_RELEVANCE_FLOOR="-1",
        RAGSITE_RELEVANCE_FLOOR_UNKNOWN_WORDS="1",
        RAGSITE_SETTINGS_SOURCE="environment",
    )
    assert result.returncode == 0, result.stderr


def gunicorn(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "ragsite/gunicorn_conf.py", "ragsite.wsgi"],
        cwd=BASE_DIR,
        env={**os.environ, "RAGSITE_BIND": "127.0.0.1:0", "RAGSITE_WORKERS": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gunicorn_stops_on_a_bad_value_of_its_own_with_one_line():
    result = gunicorn(RAGSITE_WORKERS="abc")
    assert_configuration_error(result, "RAGSITE_WORKERS must be an integer, got 'abc'")


def test_gunicorn_stops_on_a_bad_setting_instead_of_booting_workers_again_and_again():
    result = gunicorn(RAGSITE_LOG_LEVEL="loud")
    assert result.returncode == 3, result.stderr[-2000:]  # gunicorn: "Worker failed to boot"
    assert "Configuration error: RAGSITE_LOG_LEVEL must be one of" in result.stderr
    assert "Traceback" not in result.stderr
