"""The fake Ollama's request side: its HTTP server and handler, the routes, the faults, the writers.

``FakeOllama`` (resilience/fake_ollama.py, where the modes are described) builds on
``_FakeOllamaHTTP``: this module answers each request under the mode in force; that one starts,
stops and switches the server.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import struct
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from resilience.fake_models import _WORD, _model_key, fake_answer, fake_embedding

DEFAULT_ERRORS = {
    400: "invalid request",
    404: "not found",
    429: "too many requests",
    500: "an unexpected error occurred",
    502: "bad gateway",
    503: "server busy, please try again.  maximum pending requests exceeded",
}


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

    def __init__(self, address: tuple[str, int], fake: _FakeOllamaHTTP) -> None:
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


class _FakeOllamaHTTP:
    """What ``FakeOllama`` does with the connections and requests its server hands it."""

    # Set by FakeOllama.__init__ (resilience/fake_ollama.py).
    version: str
    dim: int
    models: set[str] | None
    latency: float
    chat_reply: str | None
    stream_delay: float
    _lock: threading.Lock
    _stopping: threading.Event
    _rule: _Rule
    _connections: set[socket.socket]
    _by_path: Counter[str]
    _total: int
    _accepted: int

    # -- connections -----------------------------------------------------------------------------

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
