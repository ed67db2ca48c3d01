"""Load the local embedding model when a server starts, not when the first question arrives.

Loading all-MiniLM-L6-v2 (importing torch, reading the weights, the first inference) takes 5 to
10 seconds: the first visitor of a fresh ``make run`` would wait for it. A gunicorn worker loads it
before it takes requests (ragsite/gunicorn_conf.py); the development server loads it in a
background thread as it starts, so it answers /health at once and a question asked meanwhile
waits only for the rest of the load. Management commands that do not embed (migrate, check) never
load it. With the Ollama backend nothing is called at start-up: Ollama may well be down.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

logger = logging.getLogger(__name__)


def warm_up() -> bool:
    """Import the views and load the local model; False when the local backend is not in use."""
    from django.urls import get_resolver

    from rag.embeddings import LocalEmbedder, get_embedder

    # Django imports the URLconf, and with it every view, on the first request (~0.4 s here).
    get_resolver().resolve("/health/live")
    embedder = get_embedder()
    if not isinstance(embedder, LocalEmbedder):
        return False
    started = time.perf_counter()
    embedder.embed(["warm-up"])
    logger.info("local embedding model loaded in %.1f s", time.perf_counter() - started)
    return True


def _warm_up_quietly() -> None:
    from django.db import connection

    try:
        warm_up()
    except Exception:  # the first question will load it (and report what is wrong) instead
        logger.warning("could not load the local embedding model at start-up", exc_info=True)
    finally:
        connection.close()  # reading the settings rows opened this thread's connection


def warm_up_in_background() -> threading.Thread:
    thread = threading.Thread(target=_warm_up_quietly, name="embedding-warm-up", daemon=True)
    thread.start()
    return thread


def serving_with_runserver(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> bool:
    """This process is the development server that answers requests (not its autoreloader's parent)."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    if len(argv) < 2 or argv[1] != "runserver":
        return False
    return environ.get("RUN_MAIN") == "true" or "--noreload" in argv
