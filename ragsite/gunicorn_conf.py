"""gunicorn settings (``gunicorn -c ragsite/gunicorn_conf.py ragsite.wsgi``), all from the environment.

Prometheus metrics from several worker processes are summed through prometheus_client's
multiprocess mode: every worker writes to files in PROMETHEUS_MULTIPROC_DIR, which must be empty
when the server starts and must forget a worker when it exits.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

_base = Path(__file__).resolve().parent.parent
if str(_base) not in sys.path:
    sys.path.insert(0, str(_base))

from resilience.env import EnvError, env_bool, env_int, env_path, env_str, writable_dir  # noqa: E402 (after the path)

try:
    _var = env_path("RAGSITE_VAR_DIR", _base / "var")
    # Every worker writes its metrics there: it must be writable (the one thing gunicorn writes).
    _metrics = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    _metrics_name = "PROMETHEUS_MULTIPROC_DIR" if _metrics else "RAGSITE_VAR_DIR/prometheus"
    _metrics = str(writable_dir(Path(_metrics or _var / "prometheus"), _metrics_name))
    bind = env_str("RAGSITE_BIND", "127.0.0.1:8000")
    workers = env_int("RAGSITE_WORKERS", 2, minimum=1, maximum=256)
    threads = env_int("RAGSITE_THREADS", 8, minimum=1, maximum=256)
    timeout = env_int("RAGSITE_WORKER_TIMEOUT", 120, minimum=1, maximum=86400)
    accesslog = "-" if env_bool("RAGSITE_ACCESS_LOG", True) else None
except EnvError as exc:  # the variable's name and the fix, not gunicorn's traceback of this file
    print(f"Configuration error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

worker_class = "gthread"
graceful_timeout = 20
keepalive = 5
# Each worker loads the app (and the local model) itself: forking after loading torch is unsafe.
preload_app = False
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'

os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics


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
    from django.apps import apps

    if not apps.ready:  # it never loaded the app (a configuration error): it holds nothing
        return
    from rag import bookkeeping

    bookkeeping.flush()
