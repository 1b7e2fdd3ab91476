"""A small OpenAI-compatible model server in a thread (stdlib only), for tests that need
a real socket but not a real engine: a fixed chat answer, or a stream of four words;
and an access point process in front of one (:func:`stub_gateway`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.ports import free_port

MODEL = "smol"
ANSWER: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": MODEL,
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
WORDS = ("eins", "zwei", "drei", "vier")


def _handler(delay: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in separate writes: with Nagle's algorithm the body
        # waits for the peer's delayed ACK of the headers (some 40 ms, now and then)
        disable_nagle_algorithm = True

        def _send(self, body: bytes, kind: str) -> None:
            self.send_response(200)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            models = {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
            self._send(json.dumps(models).encode(), "application/json")

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            if not request.get("stream"):
                time.sleep(delay)
                self._send(json.dumps(ANSWER).encode(), "application/json")
                return
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            for word in WORDS:
                choice = {"index": 0, "delta": {"content": word}, "finish_reason": None}
                chunk = {"id": "c", "object": "chat.completion.chunk", "model": MODEL,
                         "created": 0, "choices": [choice]}  # fmt: skip
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()
                time.sleep(2 * delay)
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def stub_backend(delay: float = 0.0) -> Iterator[int]:
    """Serve on 127.0.0.1; yields the port. ``delay``: seconds before an answer (and twice
    that between streamed words), so that requests are in flight for a while."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(delay))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def stub_gateway(work: Path, name: str) -> Iterator[GatewayProcess]:
    """An access point of its own (one process, started) whose one site serves
    :data:`MODEL` from a stub model server, for the institution ``uni-a``; files go
    under ``work``."""
    with stub_backend() as port:
        stub = f"http://127.0.0.1:{port}"
        config = fed.federation(
            name,
            work / "state",
            [fed.site("west", "NW", [fed.backend("west-1", stub, [MODEL])])],
            port=free_port(),
            models=[MODEL],
            institutions=[fed.institution("uni-a", home_region="NW")],
        )
        gw = GatewayProcess(config, work).start()
        try:
            yield gw
        finally:
            gw.stop()
