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
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

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

DEFAULT_ERRORS = {
    400: "invalid request",
    404: "not found",
    429: "too many requests",
    500: "an unexpected error occurred",
    502: "bad gateway",
    503: "server busy, please try again.  maximum pending requests exceeded",
}

_WORD = re.compile(r"\w+")
_PASSAGE = re.compile(r"^\s*\[(\d+)\]\s*(.*?)(?=^\s*\[\d+\]|\n\s*\n|\Z)", re.M | re.S)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@lru_cache(maxsize=65536)
def _feature_hash(feature: str) -> int:
    return int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")


@lru_cache(maxsize=4096)
def fake_embedding(text: str, dim: int = 384) -> tuple[float, ...]:
    """The fake's vector for ``text``: hashed words (weight 1) and char trigrams (0.5), normalised."""
    vec = [0.0] * dim
    for word in _WORD.findall(text.lower()):
        padded = f"#{word}#"
        features = [(f"w:{word}", 1.0)] + [(f"c:{padded[i : i + 3]}", 0.5) for i in range(len(padded) - 2)]
        for feature, weight in features:
            h = _feature_hash(feature)
            vec[h % dim] += weight if (h >> 63) & 1 else -weight
    norm = math.sqrt(sum(x * x for x in vec))
    if norm == 0:
        vec[0], norm = 1.0, 1.0  # no words: a fixed unit vector rather than an unnormalisable zero
    return tuple(x / norm for x in vec)


def fake_answer(messages: list[dict[str, Any]]) -> str:
    """ "According to [n], <first sentence of the first numbered passage>", deterministically."""
    texts = [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
    users = [str(m.get("content", "")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    for text in [*users[-1:], *texts]:
        match = _PASSAGE.search(text)
        if match and match.group(2).strip():
            passage = " ".join(match.group(2).split())
            return f"According to [{match.group(1)}], {_SENTENCE_END.split(passage)[0]}"
    return "I found no numbered passages to answer from."


def _model_key(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


@dataclass
class _Rule:
    mode: str
    params: dict[str, Any] = field(default_factory=dict)
    paths: frozenset[str] | None = None
    remaining: int | None = None
    release: threading.Event = field(default_factory=threading.Event)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeOllama) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        self.fake._connection_opened(sock)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out and hang up are part of the game, not errors worth a traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.fake._connection_closed(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Ollama does
    disable_nagle_algorithm = True  # otherwise kept-alive requests stall ~40 ms on delayed ACKs
    server_version = "FakeOllama/1.0"
    server: _Server

    def do_GET(self) -> None:
        self.server.fake._handle(self)

    def do_POST(self) -> None:
        self.server.fake._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeOllama:
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

    def _connection_opened(self, sock: socket.socket) -> None:
        with self._lock:
            self._accepted += 1
            self._connections.add(sock)

    def _connection_closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.discard(sock)

    # -- request handling ------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        path = urlsplit(handler.path).path
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self._lock:
            self._total += 1
            self._by_path[path] += 1
            rule = self._rule
            if rule.mode == "healthy" or (rule.paths is not None and path not in rule.paths):
                rule = _Rule("healthy")
            elif rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rule = _Rule("healthy")
        if self.latency > 0:
            time.sleep(self.latency)
        if self._fault(handler, rule):
            return
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._error(handler, 400, "invalid JSON body")
            return
        if not isinstance(body, dict):
            self._error(handler, 400, "request body must be a JSON object")
            return
        route = {
            ("POST", "/api/embed"): self._embed,
            ("POST", "/api/embeddings"): self._embeddings,
            ("POST", "/api/chat"): self._chat,
            ("POST", "/api/generate"): self._generate,
            ("GET", "/api/tags"): self._tags,
            ("GET", "/api/version"): self._version,
        }.get((handler.command, path))
        if route is None:
            self._send(handler, 404, b"404 page not found", "text/plain")
            return
        route(handler, body, rule)

    def _fault(self, handler: _Handler, rule: _Rule) -> bool:
        """Apply a request-level fault; True when it replaced the answer."""
        mode, params = rule.mode, rule.params
        if mode == "hang":
            while not rule.release.wait(0.05) and not self._stopping.is_set():
                pass
            handler.close_connection = True
            return True
        if mode == "slow":
            self._stopping.wait(float(params.get("seconds", 1.0)))
            return False
        if mode == "status":
            status = int(params.get("status", 500))
            headers = {}
            if params.get("retry_after") is not None:
                headers["Retry-After"] = str(params["retry_after"])
            if params.get("body") is not None:
                self._send(handler, status, str(params["body"]).encode(), "text/plain", headers)
            else:
                self._error(handler, status, params.get("error") or DEFAULT_ERRORS.get(status, "error"), headers)
            return True
        if mode == "malformed":
            self._send(handler, 200, b'{"model": "broken", "embeddings": [[0.1, 0.2', "application/json")
            return True
        if mode == "reset":
            sock = handler.connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.rfile.close()
            handler.wfile.close()
            sock.close()  # with linger 0 and no other references: RST instead of FIN
            # The handler still flushes and closes its files after us.
            handler.rfile, handler.wfile = io.BytesIO(), io.BytesIO()
            handler.close_connection = True
            return True
        return False

    def _check_model(self, handler: _Handler, body: dict[str, Any]) -> str | None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            self._error(handler, 400, "model is required")
            return None
        if self.models is not None and _model_key(model) not in self.models:
            self._error(handler, 404, f"model '{model}' not found")
            return None
        return model

    def _vectors(self, texts: list[str], rule: _Rule) -> list[list[float]]:
        dim = self.dim
        if rule.mode == "wrong_dim":
            dim = int(rule.params.get("dim", max(1, self.dim // 2)))
        vectors = [list(fake_embedding(text, dim)) for text in texts]
        if rule.mode == "wrong_count":
            delta = int(rule.params.get("delta", -1))
            vectors = vectors[: len(vectors) + delta] if delta < 0 else vectors + vectors[:1] * delta
        return vectors

    def _embed(self, handler: _Handler, body: dict[str, Any], rule: _Rule) -> None:
        model = self._check_model(handler, body)
        if model is None:
            return
        raw_input = body.get("input", [])
        texts = [raw_input] if isinstance(raw_input, str) else raw_input
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            self._error(handler, 400, "invalid input type")
            return
        start = time.perf_counter_ns()
        vectors = self._vectors(texts, rule)
        self._json(
            handler,
            200,
            {
                "model": model,
                "embeddings": vectors,
                "total_duration": time.perf_counter_ns() - start,
                "load_duration": 0,
                "prompt_eval_count": sum(len(_WORD.findall(t)) for t in texts),
            },
        )

    def _embeddings(self, handler: _Handler, body: dict[str, Any], rule: _Rule) -> None:
        model = self._check_model(handler, body)
        if model is None:
            return
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str):
            self._error(handler, 400, "invalid prompt type")
            return
        # The legacy endpoint does not normalise; scale so clients must do it themselves.
        vectors = self._vectors([prompt], rule)
        self._json(handler, 200, {"embedding": [3.0 * x for x in vectors[0]] if vectors else []})

    def _chat(self, handler: _Handler, body: dict[str, Any], rule: _Rule) -> None:
        model = self._check_model(handler, body)
        if model is None:
            return
        messages = body.get("messages")
        if not isinstance(messages, list):
            self._error(handler, 400, "messages must be a list")
            return
        reply = self.chat_reply if self.chat_reply is not None else fake_answer(messages)
        self._answer(handler, body, rule, model, reply, "message")

    def _generate(self, handler: _Handler, body: dict[str, Any], rule: _Rule) -> None:
        model = self._check_model(handler, body)
        if model is None:
            return
        messages = [{"role": "system", "content": body.get("system", "")}]
        messages.append({"role": "user", "content": body.get("prompt", "")})
        reply = self.chat_reply if self.chat_reply is not None else fake_answer(messages)
        self._answer(handler, body, rule, model, reply, "response")

    def _answer(self, handler: _Handler, body: dict[str, Any], rule: _Rule, model: str, reply: str, key: str) -> None:
        def piece(content: str) -> dict[str, Any]:
            created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            if key == "message":
                return {
                    "model": model,
                    "created_at": created,
                    "message": {"role": "assistant", "content": content},
                }
            return {"model": model, "created_at": created, "response": content}

        prompt_words = sum(len(_WORD.findall(json.dumps(v))) for v in body.values())
        stats = {
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "load_duration": 0,
            "prompt_eval_count": prompt_words,
            "prompt_eval_duration": 500_000,
            "eval_count": len(reply.split()),
            "eval_duration": 500_000,
        }
        if body.get("stream", True) is False:
            self._json(handler, 200, {**piece(reply), **stats})
            return
        pieces = re.findall(r"\S+\s*", reply) or [""]
        lines: list[dict[str, Any]] = []
        for index, text in enumerate(pieces):
            if rule.mode == "stream_error" and index == int(rule.params.get("after", 1)):
                lines.append({"error": rule.params.get("error", "an error was encountered while running the model")})
                break
            lines.append({**piece(text), "done": False})
        else:
            lines.append({**piece(""), **stats})
        self._stream(handler, lines)

    def _tags(self, handler: _Handler, body: dict[str, Any], rule: _Rule) -> None:
        names = sorted(self.models) if self.models is not None else ["all-minilm:latest", "llama3.2:latest"]
        models = [
            {
                "name": name,
                "model": name,
                "size": 1000,
                "digest": hashlib.sha256(name.encode()).hexdigest(),
                "details": {"format": "gguf", "family": name.split(":")[0]},
            }
            for name in names
        ]
        self._json(handler, 200, {"models": models})

    def _version(self, handler: _Handler, body: dict[str, Any], rule: _Rule) -> None:
        self._json(handler, 200, {"version": self.version})

    # -- response writers ------------------------------------------------------------------------

    def _send(
        self,
        handler: _Handler,
        status: int,
        data: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _json(self, handler: _Handler, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(handler, status, json.dumps(obj).encode(), "application/json; charset=utf-8", headers)

    def _error(self, handler: _Handler, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._json(handler, status, {"error": message}, headers)

    def _stream(self, handler: _Handler, lines: list[dict[str, Any]]) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/x-ndjson")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for obj in lines:
            data = json.dumps(obj).encode() + b"\n"
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if self.stream_delay:
                handler.wfile.flush()
                time.sleep(self.stream_delay)
        handler.wfile.write(b"0\r\n\r\n")


@contextlib.contextmanager
def saved_settings(**sections: dict[str, Any]):
    """Change the admin-edited settings rows (committed) for the duration, then restore them.

    ``saved_settings(provider={"generation_backend": "ollama"}, breaker={"failure_threshold": 2})``.
    Every process using the database (a gunicorn started by a test or a benchmark) applies the
    change within a second or two, as it would an operator's edit in the admin.
    """
    from resilience import live, models

    rows = {
        "provider": models.ProviderSettings,
        "breaker": models.BreakerSettings,
        "pool": models.PoolSettings,
        "cache": models.CacheSettings,
        "access": models.AccessSettings,
        "jobs": models.JobSettings,
    }
    saved: list[tuple[Any, dict[str, Any]]] = []
    try:
        for section, values in sections.items():
            row = rows[section].load()
            saved.append((row, {name: getattr(row, name) for name in values}))
            for name, value in values.items():
                setattr(row, name, value)
            row.save()
        live.refresh()  # this process at once, not within the second
        yield
    finally:
        for row, values in saved:
            for name, value in values.items():
                setattr(row, name, value)
            row.save()
        live.refresh()
