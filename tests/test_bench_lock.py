"""Two benchmarks never run at once against the same database."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

from bench.__main__ import LOCK

ROOT = Path(__file__).resolve().parent.parent


def test_a_second_benchmark_refuses_to_start_while_one_runs():
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running bench holds it
        held.truncate(0)
        held.write("pid 4242: python -m bench load --profile seed")
        held.flush()
        second = bench("breaker")
        help_text = bench("breaker", "--help")
    assert second.returncode == 2
    assert "another benchmark is running (pid 4242: python -m bench load --profile seed)" in second.stderr
    assert help_text.returncode == 0 and "usage: python -m bench breaker" in help_text.stdout


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
