"""Processing receipts for OIP v2 inference: the same admission (only sites that can
sign are planned; none: fail closed) and the same relay signing as the OpenAI routes.
The receipt names the model of the path (OIP bodies carry none), binary tensors pass
through the relay, and a site reached directly never yields one."""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.conftest import AP_KEY, KEYS, SITE, InProcessAgent, site_dict
from tests.conftest import MODEL, federation_dict
from tests.fakes import FakeBackend
from tests.fakes_oip import FakeOipBackend
from tests.trust.test_site_partner import AGENT_KEY_ENV, SIGNING_ENV, seeded
from verbund.agent import create_agent_app, parse_site_config
from verbund.config import parse_config
from verbund.trust import PartnerKeys, Receipt, SigningKey

DIGITS = "digits"
INFER = f"/v2/models/{DIGITS}/infer"
BODY = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.5]}]}
OIP_MODEL = {"name": DIGITS, "kind": "oip", "license": "CC-BY-4.0"}

Factory = Callable[..., Any]


@pytest.fixture
def oip_sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateway_factory: Any) -> Factory:
    """west: an OIP engine behind its agent (which signs, if ``signs``); sued: an OIP
    engine reached directly."""
    monkeypatch.setenv(AGENT_KEY_ENV, AP_KEY)

    @asynccontextmanager
    async def factory(*, signs: bool = True) -> AsyncIterator[tuple[Any, SigningKey, dict]]:
        key, seed = seeded(SITE)
        fakes: dict[str, Any] = {
            "west-oip": FakeOipBackend("west-oip"),
            "sued-oip": FakeOipBackend("sued-oip"),
            "sued-1": FakeBackend("sued-1"),
        }
        site_cfg = parse_site_config(
            {
                **site_dict(tmp_path / "site"),
                "site": {"name": SITE, "region": "NW", "jurisdiction": "DE"}
                | {"max_data_class": "confidential"},
                "backends": [
                    {"name": "west-oip", "kind": "oip", "url": "http://west-oip.invalid:8080"}
                    | {"models": [DIGITS]}
                ],
                "models": [OIP_MODEL],
            }
        )
        agent_app = create_agent_app(
            site_cfg,
            env={**KEYS, **({SIGNING_ENV: seed} if signs else {})},
            background=False,
            transport_factory=lambda b: httpx.MockTransport(fakes[b.name]),
        )
        agent_transport = httpx.ASGITransport(app=agent_app)
        data = federation_dict(
            tmp_path / "ap",
            sites=[
                {"name": SITE, "agent_url": "http://agent", "agent_key_env": AGENT_KEY_ENV}
                | {"ingress": "agent"},
                {
                    "name": "sued",
                    "region": "BY",
                    "max_data_class": "confidential",
                    "backends": [
                        {"name": "sued-1", "url": "http://sued.invalid:8000", "models": [MODEL]},
                        {"name": "sued-oip", "kind": "oip", "url": "http://sued-oip.invalid:8080"}
                        | {"models": [DIGITS]},
                    ],
                },
            ],
        )
        data["models"].append(OIP_MODEL)
        cfg = parse_config(data)

        def backend_transport(b: Any) -> httpx.AsyncBaseTransport:
            if b.url.startswith("http://agent/"):
                return agent_transport
            return httpx.MockTransport(fakes[b.name])

        async with agent_app.router.lifespan_context(agent_app):
            InProcessAgent(agent_app, agent_transport)
            async with gateway_factory(
                cfg, fakes, transport=backend_transport, agent_transport=lambda s: agent_transport
            ) as gw:
                await gw.services.health.catalogues.refresh(SITE)
                yield gw, key, fakes

    return factory


async def test_an_oip_inference_gets_a_receipt_signed_by_the_site_that_served_it(
    oip_sites: Factory,
) -> None:
    async with oip_sites() as (gw, key, fakes):
        keys = PartnerKeys({SITE: key.public_b64})
        asked = {"x-verbund-receipt": "required", "x-verbund-data-class": "confidential"}
        for _ in range(3):  # never the direct site sued, which cannot sign
            r = await gw.client.post(INFER, json=BODY, headers={**gw.auth(), **asked})
            assert r.status_code == 200, r.text
            assert r.headers["x-verbund-site"] == SITE
            receipt = Receipt.decode(r.headers["x-verbund-receipt"])
            assert receipt.valid(keys)
            assert (receipt.site, receipt.model, receipt.data_class) == (
                SITE,
                DIGITS,
                "confidential",
            )
            assert receipt.request_id == r.headers["x-request-id"]
        assert not fakes["sued-oip"].calls
        # binary tensors pass through the relay, and get their receipt too
        raw = struct.pack("<2d", 1.0, 2.5)
        tensor = {"name": "x", "shape": [1, 2], "datatype": "FP64"}
        head = json.dumps({"inputs": [tensor | {"parameters": {"binary_data_size": 16}}]})
        r = await gw.client.post(
            INFER,
            content=head.encode() + raw,
            headers={
                **gw.auth(),
                **asked,
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(len(head)),
            },
        )
        assert r.status_code == 200, r.text
        assert Receipt.decode(r.headers["x-verbund-receipt"]).valid(keys)
        assert fakes["west-oip"].calls[-1]["binary"] == raw
        # not asked for: none; served directly by sued: never one
        plain = [await gw.client.post(INFER, json=BODY, headers=gw.auth()) for _ in range(4)]
        assert all(p.status_code == 200 for p in plain)
        assert all("x-verbund-receipt" not in p.headers for p in plain)


async def test_an_oip_inference_that_needs_a_receipt_fails_closed_without_a_signing_site(
    oip_sites: Factory,
) -> None:
    async with oip_sites(signs=False) as (gw, _, fakes):
        r = await gw.client.post(
            INFER, json=BODY, headers={**gw.auth(), "x-verbund-receipt": "required"}
        )
        assert r.status_code == 503, r.text
        assert "receipt" in r.json()["error"]
        assert not fakes["west-oip"].calls and not fakes["sued-oip"].calls
        r = await gw.client.post(INFER, json=BODY, headers={**gw.auth(), "x-verbund-receipt": "x"})
        assert r.status_code == 400, r.text
