"""A fake Ollama server for tests and benchmarks: real HTTP on 127.0.0.1, switchable faults.

Tests exercise the client over real sockets instead of mocking ``requests``, so connection reuse,
timeouts, retries and resets behave as they do in production. ::

    with FakeOllama(latency=0.002) as fake:
        fake.set_mode("status", status=503, retry_after=1, times=2)  # fail twice, then answer
        fake.set_mode("hang", paths=["/api/chat"])                   # chat hangs, embed works
        fake.set_mode("down")                                        # connection refused
        fake.set_mode("healthy")                                     # back on the same port

Modes (``set_mode(mode, *, paths=None, times=None, **params)``):

- ``healthy``: answer normally.
- ``down``: the listening socket is closed and open connections are shut, so connects are
  refused; any later ``set_mode`` listens again on the same port.
- ``blackhole``: connects time out. On loopback a closed port refuses at once, so the port is held
  by a plain socket listening with a backlog of 0 that never accepts, and two filler connections
  fill its accept queue; Linux then drops further SYNs and the client's connect timeout fires.
- ``hang``: read the request, never answer until the mode changes or the server stops; then close.
- ``slow``: wait ``seconds`` (default 1) before answering normally.
- ``status``: answer ``status`` (default 500) with ``{"error": error}``, or a raw text ``body``
  (an old server's "404 page not found"), and a ``Retry-After: retry_after`` header if given.
- ``malformed``: 200 with a truncated JSON body.
- ``wrong_dim``: embeddings of length ``dim`` (default half the configured dimension).
- ``wrong_count``: ``delta`` (default -1) vectors more or fewer than inputs.
- ``reset``: read the request, then close with SO_LINGER 0 so the client gets a TCP RST.
- ``stream_error``: a streaming answer sends ``after`` pieces (default 1), then an NDJSON
  ``{"error": error}`` line, as Ollama does when a model fails mid-generation.

``paths`` limits a fault to some endpoints; ``times`` applies it to the next N matching requests
only, after which the server is healthy again. ``latency`` adds a service time to every answer.

Embeddings are deterministic: a signed, hashed bag of words and character trigrams, normalised,
so texts that share words are close (good enough for retrieval tests) and the same text always
gives the same vector. Chat answers "According to [n], <first sentence of passage [n]>" from the
first numbered passage in the last user message (or any message), unless ``chat_reply`` is set.

This module holds the fake's controls (lifecycle, modes, counters); resilience/fake_ollama_http.py
answers the requests and resilience/fake_models.py makes the vectors and answers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from resilience.fake_models import _model_key, fake_embedding
from resilience.fake_ollama_http import _FakeOllamaHTTP, _Rule, _Server

MODES = frozenset(
    {
        "healthy",
        "down",
        "blackhole",
        "hang",
        "slow",
        "status",
        "malformed",
        "wrong_dim",
        "wrong_count",
        "reset",
        "stream_error",
    }
)
SERVER_MODES = frozenset({"down", "blackhole"})


class FakeOllama(_FakeOllamaHTTP):
    """An HTTP server speaking enough of Ollama's API, with faults switchable at run time."""

    version = "0.6.0-fake"

    def __init__(
        self,
        *,
        dim: int = 384,
        models: Iterable[str] | None = None,
        latency: float = 0.0,
        chat_reply: str | None = None,
        stream_delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.dim = dim
        self.models: set[str] | None = None if models is None else {_model_key(m) for m in models}
        self.latency = latency
        self.chat_reply = chat_reply
        # Seconds between streamed pieces, as a model generating tokens would take.
        self.stream_delay = stream_delay
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._server_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._hole: list[socket.socket] = []
        self._stopping = threading.Event()
        self._rule = _Rule("healthy")
        self._connections: set[socket.socket] = set()
        self._by_path: Counter[str] = Counter()
        self._total = 0
        self._accepted = 0

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeOllama:
        with self._server_lock:
            self._stopping.clear()
            self._listen()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._rule.release.set()
        with self._server_lock:
            self._go_down()
            self._close_hole()

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- modes -----------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._rule.mode

    def set_mode(
        self, mode: str, *, paths: Iterable[str] | None = None, times: int | None = None, **params: Any
    ) -> None:
        """Switch the fault mode (see the module docstring); thread-safe, effective at once."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose from {sorted(MODES)}")
        if mode in SERVER_MODES and (paths is not None or times is not None):
            raise ValueError(f"mode {mode!r} applies to the whole server, not to paths or a count")
        rule = _Rule(mode, params, None if paths is None else frozenset(paths), times)
        with self._lock:
            previous, self._rule = self._rule, rule
        previous.release.set()  # requests hanging under the previous mode give up now
        with self._server_lock:
            if self._stopping.is_set():
                return
            if mode == "down":
                self._go_down()
                self._close_hole()
            elif mode == "blackhole":
                self._go_down()
                self._open_hole()
            elif self._server is None:
                self._close_hole()
                self._listen()

    def healthy(self) -> None:
        self.set_mode("healthy")

    # -- counters --------------------------------------------------------------------------------

    @property
    def total_requests(self) -> int:
        with self._lock:
            return self._total

    @property
    def requests_by_path(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_path)

    def count(self, path: str) -> int:
        with self._lock:
            return self._by_path[path]

    @property
    def connections_accepted(self) -> int:
        with self._lock:
            return self._accepted

    def reset_counters(self) -> None:
        with self._lock:
            self._by_path.clear()
            self._total = 0
            self._accepted = 0

    def embedding(self, text: str) -> list[float]:
        """The vector this server returns for ``text`` when healthy."""
        return list(fake_embedding(text, self.dim))

    # -- server plumbing (call with _server_lock held) -------------------------------------------

    def _listen(self) -> None:
        if self._server is not None:
            return
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-ollama", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread

    def _go_down(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for sock in connections:  # kept-alive client connections must not outlive the server
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _open_hole(self) -> None:
        if self._hole:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(0)
        self._hole.append(listener)
        for _ in range(2):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex((self.host, self.port))
            self._hole.append(filler)
        time.sleep(0.01)  # let the fillers' handshakes land in the accept queue

    def _close_hole(self) -> None:
        for sock in self._hole:
            sock.close()
        self._hole = []
