"""`verbund gateway` with one and with two real worker processes: one port, one usage ledger."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.cluster import gateway_argv
from tests.realdemo import free_port

ADMIN = "vbadmin-workers-test-0123456789"
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
    port = free_port()
    state = tmp_path / "state"
    cfg = tmp_path / "federation.toml"
    cfg.write_text(
        f"""
[gateway]
name = "ap-w"
listen = "127.0.0.1:{port}"
state_dir = "{state}"
workers = {workers}

[store]
url = "sqlite+aiosqlite:///{state / "verbund.db"}"

[[sites]]
name = "west"
region = "NW"
jurisdiction = "DE"

  [[sites.backends]]
  name = "west-1"
  url = "http://127.0.0.1:{backend}"
  models = ["smol"]

[[models]]
name = "smol"

[[institutions]]
id = "uni-a"
home_region = "NW"
"""
    )
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        gateway_argv(cfg),
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "VERBUND_ADMIN_KEY": ADMIN},
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway not ready"
            time.sleep(0.1)
        admin = {"authorization": f"Bearer {ADMIN}"}
        key = httpx.post(f"{base}/admin/keys", json={"institution": "uni-a"}, headers=admin).json()[
            "key"
        ]
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
        deadline = time.monotonic() + 30
        while True:  # both workers' spools end up in the one store
            rows = httpx.get(
                f"{base}/admin/usage", params={"group_by": "institution"}, headers=admin
            ).json()["data"]
            if sum(r["requests"] for r in rows) == 30:
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        rc = proc.wait(30)
        log.close()
    assert rc == 0, (tmp_path / "gateway.log").read_text()
