"""The embedded Postgres runs with memory and index-build settings sized for the machine."""

from __future__ import annotations

import logging

import psycopg
import pytest

from ragsite import embedded_db, pgtuning
from resilience.env import EnvError
from tests.test_checks import check

GB = pgtuning.GB


def shown(host: str, names) -> dict[str, str]:
    with psycopg.connect(host=host, user="postgres", dbname="postgres") as conn:
        return {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "pgdata"
    yield path
    embedded_db.stop(path)


def same_size(a: str, b: str) -> bool:
    return pgtuning.size_bytes(a) == pgtuning.size_bytes(b)


@pytest.mark.slow
def test_a_new_embedded_database_runs_with_the_settings_for_this_machine(data_dir):
    settings = pgtuning.embedded_settings({"RAGSITE_PG_SHARED_BUFFERS": "160MB"})

    host = embedded_db.socket_dir(data_dir, settings)

    running = shown(host, settings)
    assert same_size(running["shared_buffers"], "160MB")
    for name in pgtuning.MEMORY_SETTINGS:
        assert same_size(running[name], settings[name]), name
    assert running["max_parallel_maintenance_workers"] == settings["max_parallel_maintenance_workers"]


@pytest.mark.slow
def test_a_running_server_reloads_changed_settings_and_says_which_wait_for_a_restart(data_dir, caplog):
    settings = pgtuning.embedded_settings({"RAGSITE_PG_SHARED_BUFFERS": "160MB"})
    embedded_db.socket_dir(data_dir, settings)
    embedded_db._started.clear()  # as another process would find it: running

    with caplog.at_level(logging.WARNING, logger="ragsite.embedded_db"):
        host = embedded_db.socket_dir(data_dir, {**settings, "work_mem": "12MB", "shared_buffers": "192MB"})

    running = shown(host, ["work_mem", "shared_buffers"])
    assert same_size(running["work_mem"], "12MB")
    assert same_size(running["shared_buffers"], "160MB")
    assert "keeps its old shared_buffers until it restarts: run `make stop-db`" in caplog.text

    embedded_db.stop(data_dir)
    assert same_size(shown(embedded_db.socket_dir(data_dir), ["shared_buffers"])["shared_buffers"], "192MB")


def test_settings_follow_the_machines_memory_and_cores():
    big = pgtuning.sized_for(pgtuning.Machine(memory_bytes=64 * GB, cores=8, shm_bytes=32 * GB))
    assert big["shared_buffers"] == "8192MB"  # a quarter, at most 8 GB
    assert big["maintenance_work_mem"] == "4096MB"
    assert big["max_parallel_maintenance_workers"] == "7"

    small = pgtuning.sized_for(pgtuning.Machine(memory_bytes=2 * GB, cores=1, shm_bytes=64 * pgtuning.MB))
    assert small["shared_buffers"] == "512MB"
    assert small["max_parallel_maintenance_workers"] == "0"
    # A container's 64 MB /dev/shm would make a parallel index build fail with a bigger graph.
    assert small["maintenance_work_mem"] == "64MB"


def test_overrides_win_and_bad_ones_name_their_variable():
    machine = pgtuning.Machine(memory_bytes=16 * GB, cores=4)
    settings = pgtuning.embedded_settings(
        {"RAGSITE_PG_MAINTENANCE_WORK_MEM": "2GB", "RAGSITE_PG_MAX_PARALLEL_MAINTENANCE_WORKERS": "2"}, machine
    )
    assert settings["maintenance_work_mem"] == "2GB"
    assert settings["max_parallel_maintenance_workers"] == "2"
    with pytest.raises(EnvError, match="RAGSITE_PG_WORK_MEM must be a size"):
        pgtuning.embedded_settings({"RAGSITE_PG_WORK_MEM": "lots"}, machine)
    with pytest.raises(EnvError, match="RAGSITE_PG_MAX_PARALLEL_MAINTENANCE_WORKERS"):
        pgtuning.embedded_settings({"RAGSITE_PG_MAX_PARALLEL_MAINTENANCE_WORKERS": "-1"}, machine)


def test_a_bad_override_stops_the_service_at_start_up():
    result = check(RAGSITE_PG_SHARED_BUFFERS="6 gigs")
    assert result.returncode != 0
    assert "RAGSITE_PG_SHARED_BUFFERS must be a size with its unit" in result.stderr
    assert "Traceback" not in result.stderr
