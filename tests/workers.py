"""Real procrastinate workers in their own processes, on the test database (the queue tests).

They see only what is committed: tests that use them commit their rows and delete them after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.live import test_database_url

ROOT = Path(__file__).resolve().parent.parent
# Heartbeats every second; a worker silent for 3 s counts as dead (the sweep looks every second).
FAST_RECOVERY = {"RAGSITE_WORKER_HEARTBEAT_SECONDS": "1", "RAGSITE_WORKER_STALLED_SECONDS": "3"}


class Worker:
    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a machine dies."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait: the worker finishes its current job first."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@contextmanager
def workers(tmp_path: Path, count: int = 1, env: dict[str, str] | None = None) -> Iterator[list[Worker]]:
    """``count`` worker processes (``manage.py procrastinate worker``); stopped when the block ends."""
    started: list[Worker] = []
    full_env = {**os.environ, "DATABASE_URL": test_database_url(), **FAST_RECOVERY, **(env or {})}
    try:
        for _ in range(count):
            started.append(start_worker(tmp_path, full_env))
        for worker in started:
            wait_for(
                lambda w=worker: "Starting worker" in w.output(), timeout=60, what="a worker to start", worker=worker
            )
        yield started
    finally:
        for worker in started:
            worker.stop()


def start_worker(tmp_path: Path, env: dict[str, str]) -> Worker:
    log = tmp_path / f"worker-{uuid.uuid4().hex[:8]}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "procrastinate", "worker"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(process, log)


def wait_for(condition: Callable[[], object], *, timeout: float, what: str, worker: Worker | None = None) -> object:
    """Poll ``condition`` until it is true; fail saying what was awaited (and the worker's log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if worker is not None and worker.process.poll() is not None:
            raise AssertionError(f"the worker exited while waiting for {what}:\n{worker.output()[-3000:]}")
        if time.monotonic() > deadline:
            detail = f"\n{worker.output()[-3000:]}" if worker is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")
        time.sleep(0.1)
