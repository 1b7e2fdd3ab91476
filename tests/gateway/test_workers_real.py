"""`verbund gateway` with one and with two real worker processes: one port, one usage ledger."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port

ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "smol",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class _Backend(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible model server (stdlib only)."""

    protocol_version = "HTTP/1.1"

    def _json(self, body: object) -> None:
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self._json({"object": "list", "data": [{"id": "smol", "object": "model"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self._json(ANSWER)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.real
@pytest.mark.parametrize(
    ("workers", "spool"),
    [(1, ["ap-w"]), (2, ["ap-w.w0", "ap-w.w0.lock", "ap-w.w1", "ap-w.w1.lock"])],
)
def test_workers_serve_and_account_every_request(
    tmp_path: Path, backend: int, workers: int, spool: list[str]
) -> None:
    state = tmp_path / "state"
    config = fed.federation(
        "ap-w",
        state,
        [fed.site("west", "NW", [fed.backend("west-1", f"http://127.0.0.1:{backend}", ["smol"])])],
        port=free_port(),
        gateway={"workers": workers},
        models=["smol"],
        institutions=[fed.institution("uni-a", home_region="NW")],
    )
    gw = GatewayProcess(config, tmp_path)
    base = gw.url
    try:
        gw.start()
        key = gw.create_key("uni-a")["key"]
        body = {"model": "smol", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(30):  # a new connection each time: either worker may accept it
            r = httpx.post(
                f"{base}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key}"},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "hi"
        assert sorted(p.name for p in (state / "usage-spool").iterdir()) == spool

        def accounted() -> bool:  # both workers' spools end up in the one store
            rows = gw.admin("GET", "/admin/usage", params={"group_by": "institution"})["data"]
            return sum(r["requests"] for r in rows) == 30

        poll(accounted, "all 30 requests in the usage report", 30, every=0.2)
    finally:
        rc = gw.stop(30)
    assert rc == 0, gw.process.log_tail()
