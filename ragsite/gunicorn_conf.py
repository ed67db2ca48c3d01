"""gunicorn settings (``gunicorn -c ragsite/gunicorn_conf.py ragsite.wsgi``), all from the environment.

Prometheus metrics from several worker processes are summed through prometheus_client's
multiprocess mode: every worker writes to files in PROMETHEUS_MULTIPROC_DIR, which must be empty
when the server starts and must forget a worker when it exits.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_base = Path(__file__).resolve().parent.parent
_var = Path(os.environ.get("RAGSITE_VAR_DIR", _base / "var"))

bind = os.environ.get("RAGSITE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("RAGSITE_WORKERS", "2"))
threads = int(os.environ.get("RAGSITE_THREADS", "8"))
worker_class = "gthread"
timeout = int(os.environ.get("RAGSITE_WORKER_TIMEOUT", "120"))
graceful_timeout = 20
keepalive = 5
# Each worker loads the app (and the local model) itself: forking after loading torch is unsafe.
preload_app = False
accesslog = "-" if os.environ.get("RAGSITE_ACCESS_LOG", "1") == "1" else None
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_var / "prometheus"))


def on_starting(server) -> None:
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def child_exit(server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker) -> None:
    """Load the local embedding model before the worker takes requests, not on its first one."""
    from rag.model_warmup import warm_up

    warm_up()


def worker_exit(server, worker) -> None:
    """Write the hit counts, counters and query log rows the worker still holds (rag.bookkeeping)."""
    from rag import bookkeeping

    bookkeeping.flush()
