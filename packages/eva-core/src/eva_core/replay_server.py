"""An OpenAI-compatible chat-completions server that replays scripted replies.

A stand-in "model" for exercising evaluation clients end to end over HTTP, tool turns
included, without a model: eva's `OpenAIPolicy` and the released evaluation script both run
against it unchanged (`benchmarks/eval_client.py` times one against the other). Reply k of a
conversation (k = assistant turns already in it) is reply k of its script, the last one
repeating; `scripted_replies` picks the script by a key found in the first user turn.

Serves `GET /v1/models` and non-streaming `POST /v1/chat/completions` on a thread per
connection (the standard library's `ThreadingHTTPServer`), with an optional fixed latency per
completion. `usage` counts are rough: characters / 4 for text, and Qwen2.5-VL's (H / 28) *
(W / 28) for each PNG image (read from the PNG header of a data URL or a `file://` path):
enough for a client's bookkeeping, not a tokenizer's figure.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ReplyFn = Callable[[list[dict[str, Any]]], str]
"""The request's messages -> the assistant reply's text."""


def message_text(message: dict[str, Any]) -> str:
    """A message's text: its string content, or its text parts joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def scripted_replies(scripts: Mapping[str, Sequence[str]]) -> ReplyFn:
    """Replies from per-conversation scripts.

    Args:
        scripts: {key: replies}; a conversation follows the script whose key occurs in its first
            user turn's text (the first key that does, in order).

    Returns:
        A `ReplyFn` giving reply k of the script, k the assistant turns so far (the last reply
        repeats). A conversation that matches no key raises `KeyError` (HTTP 400).
    """
    items = [(key, list(replies)) for key, replies in scripts.items()]
    for key, replies in items:
        if not replies:
            raise ValueError(f"script {key!r} has no replies")

    def reply(messages: list[dict[str, Any]]) -> str:
        first_user = next((message_text(m) for m in messages if m.get("role") == "user"), "")
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        for key, replies in items:
            if key in first_user:
                return replies[min(turn, len(replies) - 1)]
        raise KeyError(f"no script matches the conversation starting {first_user[:80]!r}")

    return reply


def _rough_tokens(text: str) -> int:
    return len(text) // 4 + 1


def png_size(url: str) -> tuple[int, int] | None:
    """(height, width) of a PNG given as a base64 data URL or a file:// URL; None otherwise."""
    try:
        if url.startswith("data:image/png;base64,"):
            head = base64.b64decode(url[len("data:image/png;base64,"):][:32])
        elif url.startswith("file://"):
            with open(url[len("file://"):], "rb") as f:
                head = f.read(24)
        else:
            return None
    except (OSError, ValueError):
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return height, width


def image_tokens(messages: list[dict[str, Any]]) -> int:
    """Qwen2.5-VL's visual tokens of the PNG images in the messages: (H / 28) * (W / 28) each."""
    total = 0
    for m in messages:
        for part in m.get("content") if isinstance(m.get("content"), list) else []:
            url = (part.get("image_url") or {}).get("url", "") if isinstance(part, dict) else ""
            size = png_size(url)
            if size is not None:
                total += (size[0] // 28) * (size[1] // 28)
    return total


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # a client opening dozens of connections at once is not refused
    daemon_threads = True


class ReplayServer:
    """The server, started on enter and stopped on exit.

    Args:
        reply: the reply for a request's messages.
        model: the model id the server reports.
        host, port: where to listen (port 0: any free port; see `url`).
        latency_s: seconds each completion waits before answering (a model's time).
    """

    def __init__(self, reply: ReplyFn, *, model: str = "replay", host: str = "127.0.0.1", port: int = 0,
                 latency_s: float = 0.0):
        self.reply, self.model, self.latency_s = reply, model, latency_s
        self.requests = 0
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL clients take, ending in /v1."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> ReplayServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="replay-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """The chat-completions response to a request body."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("`messages` must be a non-empty list")
        text = self.reply(messages)
        if self.latency_s:
            time.sleep(self.latency_s)
        with self._lock:
            self.requests += 1
        prompt = _rough_tokens("".join(message_text(m) for m in messages)) + image_tokens(messages)
        completion = _rough_tokens(text)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: one line per request would swamp a run
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    self._send(200, server.completion(json.loads(body)))
                except (ValueError, KeyError) as error:
                    self._send(400, {"error": {"message": str(error)}})

        return Handler
