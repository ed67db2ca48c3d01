"""Server settings for the embedded Postgres, sized from this machine's memory and cores.

initdb's defaults are made for a small shared host: 128 MB of shared buffers, 4 MB per sort, 64 MB
for an index build and no parallel build workers. A pgvector HNSW index is read at random, so
queries stay fast only while it sits in shared buffers (the cache's index is ~190 MB at 100k
entries; 1M chunks need ~2 GB), and an HNSW build is many times faster when its graph fits in
``maintenance_work_mem``. The embedded server shares the machine with the web workers and the
local model, so it takes a quarter of the memory for its buffers, as Postgres's own docs advise for
a dedicated server, and no more than 8 GB.

Each value can be overridden with ``RAGSITE_PG_<NAME>`` (``RAGSITE_PG_SHARED_BUFFERS=2GB``). A
server given by ``DATABASE_URL`` is never touched: see the README's advice.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from resilience.env import EnvError

MB = 1024 * 1024
GB = 1024 * MB
# Settings that only take effect when the server starts; the others apply on a reload.
RESTART_ONLY = frozenset({"shared_buffers"})
MEMORY_SETTINGS = ("shared_buffers", "effective_cache_size", "work_mem", "maintenance_work_mem")
COUNT_SETTINGS = ("max_parallel_maintenance_workers",)
_SIZE = re.compile(r"^(\d+)\s*(kB|MB|GB|TB)$")
_UNITS = {"kB": 1024, "MB": MB, "GB": GB, "TB": 1024 * GB}


@dataclass(frozen=True)
class Machine:
    memory_bytes: int
    cores: int
    # /dev/shm, where Postgres puts the shared memory of a parallel index build.
    shm_bytes: int | None = None


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or a huge number: no limit
            return int(text)
    return None


def this_machine() -> Machine:
    """Memory (the container's limit when lower) and the cores this process may run on."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    if limit:
        memory = min(memory, limit)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        stat = os.statvfs("/dev/shm")
        shm = stat.f_frsize * stat.f_blocks
    except OSError:
        shm = None
    return Machine(memory_bytes=memory, cores=cores, shm_bytes=shm)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _mb(size: int) -> str:
    return f"{size // MB}MB"


def sized_for(machine: Machine) -> dict[str, str]:
    """The embedded server's settings for ``machine``."""
    memory = machine.memory_bytes
    shared = _clamp(memory // 4, 128 * MB, 8 * GB)
    # A parallel build keeps its graph in one shared segment in /dev/shm, 64 MB in some containers.
    maintenance = _clamp(memory // 8, 64 * MB, 4 * GB)
    if machine.shm_bytes:
        maintenance = max(64 * MB, min(maintenance, machine.shm_bytes // 2))
    return {
        "shared_buffers": _mb(shared),
        # What the planner may assume the OS and Postgres cache together; it allocates nothing.
        "effective_cache_size": _mb(_clamp(memory // 2, 512 * MB, 64 * GB)),
        # Per sort or hash, per connection: 100 connections must not be able to exhaust memory.
        "work_mem": _mb(_clamp((memory - shared) // 400, 4 * MB, 64 * MB)),
        "maintenance_work_mem": _mb(maintenance),
        # The leader builds too: one worker fewer than cores keeps every core busy.
        "max_parallel_maintenance_workers": str(_clamp(machine.cores - 1, 0, 7)),
    }


def size_bytes(value: str) -> int:
    """Bytes of a Postgres memory size written with its unit ("128MB", "2GB", "8192kB")."""
    match = _SIZE.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a size such as 512MB or 2GB")
    return int(match.group(1)) * _UNITS[match.group(2)]


def embedded_settings(environ: Mapping[str, str] | None = None, machine: Machine | None = None) -> dict[str, str]:
    """The settings for this machine, with the ``RAGSITE_PG_<NAME>`` overrides; a bad one raises EnvError."""
    environ = os.environ if environ is None else environ
    settings = sized_for(machine or this_machine())
    for name in (*MEMORY_SETTINGS, *COUNT_SETTINGS):
        variable = f"RAGSITE_PG_{name.upper()}"
        raw = (environ.get(variable) or "").strip()
        if not raw:
            continue
        if name in MEMORY_SETTINGS:
            try:
                size = size_bytes(raw)
            except ValueError:
                message = f"{variable} must be a size with its unit (kB, MB, GB), such as 512MB; got {raw!r}"
                raise EnvError(message) from None
            if size < MB:
                raise EnvError(f"{variable} must be at least 1MB, got {raw!r}")
            settings[name] = raw.replace(" ", "")
        else:
            if not raw.isdigit() or int(raw) > 64:
                raise EnvError(f"{variable} must be a whole number from 0 to 64, got {raw!r}")
            settings[name] = str(int(raw))
    return settings
