"""Privacy canary: prompts, completions, user ids and keys pass through the access point
(streamed and not, answered and failing); afterwards no log line, no byte of the store,
no metric and no span contains any of them."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import ADMIN_KEY, MODEL, make_config
from tests.fakes import FakeBackend, transport_factory
from verbund.gateway import Services, create_app
from verbund.telemetry import JsonFormatter

PROMPT = "CANARY-PROMPT-5d1f0a"
SYSTEM = "CANARY-SYSTEM-77b2c9"
ANSWER = "CANARY-ANSWER-e4a3d8"
USER = "CANARY-USER-0c6e91"
ERROR = "CANARY-ERROR-9a8b7c"


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield buf
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_no_content_or_key_anywhere(tmp_path: Path, captured_logs: io.StringIO) -> None:
    cfg = make_config(tmp_path)
    fakes = {b.name: FakeBackend(b.name, text=ANSWER) for s in cfg.sites for b in s.backends}
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(
        cfg,
        admin_key=ADMIN_KEY,
        transport_factory=transport_factory(fakes),
        background=False,
        tracer=provider.get_tracer("test"),
    )
    svc: Services = app.state.services
    async with app.router.lifespan_context(app):
        key = (await svc.keys.create("uni-a", "canary", actor="test")).key
        auth = {"authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://ap"
        ) as client:
            body = {
                "model": MODEL,
                "user": USER,
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": PROMPT},
                ],
            }
            ok = await client.post("/v1/chat/completions", json=body, headers=auth)
            assert ANSWER in ok.text  # it did pass through
            streamed = await client.post(
                "/v1/chat/completions", headers=auth, json={**body, "stream": True}
            )
            assert streamed.status_code == 200
            for f in fakes.values():
                f.mode, f.status = "status", 400
                # an engine that echoes the prompt, unquoted, next to its own words
                f.error_body = (
                    b'{"error": {"message": "bad: '
                    + ERROR.encode()
                    + b" near "
                    + PROMPT.encode()
                    + b'"}}'
                )
            rejected = await client.post("/v1/chat/completions", json=body, headers=auth)
            assert rejected.status_code == 400 and ERROR not in rejected.text
            for f in fakes.values():
                f.mode, f.status = "status", 500
            await client.post("/v1/chat/completions", json=body, headers=auth)
            await client.post(
                "/v1/chat/completions", json={**body, "model": "x" * 3 + PROMPT}, headers=auth
            )
            await client.post(
                "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}x"}
            )
            metrics = (await client.get("/metrics")).text
        await svc.accounting.spool.flush()
    provider.force_flush()

    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} >= {"verbund.auth", "verbund.route", "verbund.upstream"}
    span_text = repr(
        [
            (
                s.name,
                dict(s.attributes or {}),
                [(e.name, dict(e.attributes or {})) for e in s.events],
                s.status.description,
            )
            for s in spans
        ]
    )
    store_bytes = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    logs = captured_logs.getvalue()
    assert '"logger":"verbund.access"' in logs  # the access log did run
    assert "verbund_requests_total" in metrics
    assert "u_" in logs  # the pseudonym of the user is logged ...
    # the operator's log has what the backend said, without what the client sent; the
    # client, the store, metrics and spans never see it
    assert ERROR in logs
    for canary in (PROMPT, SYSTEM, ANSWER, USER, ERROR, key, key[3:20]):
        if canary != ERROR:
            assert canary not in logs, canary
        assert canary.encode() not in store_bytes, canary
        assert canary not in metrics, canary
        assert canary not in span_text, canary
