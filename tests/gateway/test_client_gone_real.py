"""A client that leaves before its first token frees the engine at once (real processes).

One simulated engine with a slow prefill (about 8 s for this prompt) behind a real
``verbund gateway``. The client sends a streamed chat request on a raw socket and closes
it while the engine is still in prefill. The access point must close its upstream
connection within a second or so, so the engine stops (its ``cancelled`` count rises),
instead of holding the engine until the first token is ready and only then noticing.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port
from harness.simengine import MODEL, EngineProcess, EngineSpec, Site, engine_federation

pytestmark = pytest.mark.real

PREFILL_MS_PER_TOKEN = 8.0
PROMPT = "x" * 4000  # about 1,000 tokens: 8 s of prefill


def test_a_stream_abandoned_before_its_first_token_stops_at_the_engine(tmp_path: Path) -> None:
    engine = EngineProcess(
        EngineSpec("slow-1", slots=1, prefill_ms_per_token=PREFILL_MS_PER_TOKEN),
        tmp_path,
        port=free_port(),
    ).start()
    port = free_port()
    sites = [Site("west", "NW", [(engine.spec, engine.url)])]
    gateway = GatewayProcess(engine_federation(tmp_path, port, sites, home_site="west"), tmp_path)
    try:
        gateway.serve()
        body = json.dumps(
            {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
        ).encode()
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"authorization: Bearer {gateway.key}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(head + body)
            poll(lambda: engine.stats()["running"] == 1, "the engine to start the prefill", 5)
            time.sleep(0.5)
            assert engine.stats()["cancelled"] == 0
        left = time.monotonic()  # the client has closed its connection
        poll(
            lambda: engine.stats()["cancelled"] == 1 and engine.stats()["running"] == 0,
            "the engine to see the request cancelled",
            2.5,
        )
        assert time.monotonic() - left < 2.5  # the prefill alone would take about 7 s more
    finally:
        gateway.stop()
        engine.stop()
