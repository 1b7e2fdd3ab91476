"""Processing receipts for OIP v2 inference: the same admission (only sites that can
sign are planned; none: fail closed) and the same relay signing as the OpenAI routes.
The receipt names the model of the path (OIP bodies carry none), binary tensors pass
through the relay, and a site reached directly never yields one."""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.agent import AgentProcess, site_toml
from harness.federation import federation as harness_federation
from harness.federation import institution
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port
from harness.processes import Process, child_env
from tests.agent.conftest import SITE
from tests.fakes_oip import FakeOipBackend
from tests.trust.test_site_partner import SIGNING_ENV, seeded
from verbund import demo_models
from verbund.demo_models import TRAINERS, find_mlserver_python
from verbund.trust import PartnerKeys, Receipt, SigningKey, generate_key_file

DIGITS = "digits"
INFER = f"/v2/models/{DIGITS}/infer"
BODY = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.5]}]}
OIP_MODEL = {"name": DIGITS, "kind": "oip", "license": "CC-BY-4.0"}

Factory = Callable[..., Any]


@pytest.fixture
def oip_sites(linked_factory: Any) -> Factory:
    """west: an OIP engine behind its agent (which signs, if ``signs``); sued: an OIP
    engine reached directly."""
    oip_backend = {"kind": "oip", "models": [DIGITS]}

    def with_sued_oip(ap: dict[str, Any]) -> None:
        sued = next(site for site in ap["sites"] if site["name"] == "sued")
        sued["backends"].append(
            {"name": "sued-oip", "url": "http://sued-oip.invalid:8080"} | oip_backend
        )
        ap["models"].append(OIP_MODEL)

    @asynccontextmanager
    async def factory(*, signs: bool = True) -> AsyncIterator[tuple[Any, SigningKey, dict]]:
        key, seed = seeded(SITE)
        async with linked_factory(
            [],
            "agent",
            announce={"max_data_class": "confidential"},
            site_extra={
                "backends": [
                    {"name": "west-oip", "url": "http://west-oip.invalid:8080"} | oip_backend
                ],
                "models": [OIP_MODEL],
            },
            agent_env={SIGNING_ENV: seed} if signs else {},
            configure=with_sued_oip,
            fakes={n: FakeOipBackend(n) for n in ("west-oip", "sued-oip")},
        ) as linked:
            await linked.refresh()
            yield linked.gw, key, linked.fakes

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


# --- real processes -----------------------------------------------------------------------


@pytest.mark.real
def test_processes_an_oip_inference_through_a_signing_agent_gets_a_verifiable_receipt(
    tmp_path: Path,
) -> None:
    """MLServer (scikit-learn digits, OIP v2) behind `verbund site` with its own key
    (``ingress = "agent"``), and `verbund gateway`: a digit recognised with
    ``X-Verbund-Receipt: required`` carries a receipt `verbund receipt verify` accepts."""
    python = find_mlserver_python()
    assert python is not None, "no .venv-mlserver: run ./scripts/_mlserver_env.sh"
    model_dir = demo_models.train("digits", python, tmp_path)
    folder = tmp_path / "mlserver"
    (folder / DIGITS).mkdir(parents=True)
    port = free_port()
    (folder / "settings.json").write_text(
        json.dumps(demo_models.server_settings(port, free_port()))
    )
    settings = demo_models.model_settings(DIGITS, model_dir / "model.joblib", "digits")
    (folder / DIGITS / "model-settings.json").write_text(json.dumps(settings))
    engine = Process(
        "mlserver",
        demo_models.mlserver_command(python, folder),
        tmp_path / "mlserver.log",
        cwd=folder,
        env=child_env({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}),
    )
    public = generate_key_file(tmp_path / "west-signing.pem")
    config = site_toml(
        SITE,
        f"127.0.0.1:{free_port()}",
        tmp_path / "state-west",
        site={"max_data_class": "confidential"},
        backends=[
            {"name": "west-oip", "kind": "oip", "url": f"http://127.0.0.1:{port}"}
            | {"models": [DIGITS]}
        ],
        models=[OIP_MODEL | {"inputs": TRAINERS["digits"].inputs}],
        trust={"signing_key_file": str(tmp_path / "west-signing.pem")},
    )
    agent = AgentProcess(config, tmp_path)
    gateway: GatewayProcess | None = None
    try:
        engine.start()
        agent.launch()
        engine.wait_http(f"http://127.0.0.1:{port}/v2/health/ready", 120)
        agent.wait_ready(60)
        cfg = harness_federation(
            "ap-oip",
            tmp_path / "ap",
            [
                {"name": SITE, "agent_url": agent.url, "agent_key_env": "WEST_AGENT_KEY"}
                | {"ingress": "agent"}
            ],
            port=free_port(),
            gateway={"home_site": SITE, "max_data_class": "confidential"},
            institutions=[institution("uni-a", home_region="NW")],
            trust={"checkpoint_interval": 0},
        )
        gateway = GatewayProcess(cfg, tmp_path / "ap", env={"WEST_AGENT_KEY": agent.ap_key})
        gateway.serve()
        images = [[float(i % 17) for i in range(64)]]
        body = {"inputs": [{"name": "images", "shape": [1, 64], "datatype": "FP64"}]}
        body["inputs"][0]["data"] = [p for img in images for p in img]
        url = f"{gateway.url}{INFER}"
        auth = {"authorization": f"Bearer {gateway.key}", "x-verbund-receipt": "required"}

        def served() -> bool:
            r = httpx.post(url, json=body, headers=auth, timeout=30, trust_env=False)
            return r.status_code == 200

        poll(served, "the digits model through west's agent", 60, 0.2)
        r = httpx.post(url, json=body, headers=auth, timeout=30, trust_env=False)
        assert r.status_code == 200 and r.headers["x-verbund-site"] == SITE, r.text
        value = r.headers["x-verbund-receipt"]
        ok = subprocess.run(
            [sys.executable, "-m", "verbund.cli", "receipt", "verify", value, "--key", public],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "receipt OK: signed by site west (DE)" in ok.stdout
        receipt = Receipt.decode(value)
        assert (receipt.model, receipt.request_id) == (DIGITS, r.headers["x-request-id"])
        edited = dataclasses.replace(receipt, model="other")
        assert not edited.valid(PartnerKeys({SITE: public}))
    finally:
        if gateway is not None:
            gateway.stop()
        agent.stop(10)
        engine.kill()
