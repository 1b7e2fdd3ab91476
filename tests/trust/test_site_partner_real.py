"""A site as a signing partner, with real processes: a site agent with its own Ed25519
key relaying to a real engine (``ingress = "agent"``), a site reached directly without
one, and an access point. The agent's key is announced and taken; the agent signs the
access point's chain head; receipts of sensitive requests verify with
``verbund receipt verify`` (and fail when edited), streams with them work with the
openai SDK; a receipt-bound request for a site that cannot sign fails closed; the
agent's own signed statement shows usage records the access point dropped (``verbund
settle --from-sites``); erasure reaches the site and a canary is found nowhere."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pytest

from harness.agent import AgentFederation
from harness.federation import federation, institution
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port
from harness.simengine import MODEL
from verbund.store import Store, TrainingJobRow
from verbund.trust import Receipt, generate_key_file

pytestmark = pytest.mark.real

SITES = [("west", "NW", "agent", []), ("sued", "BY", "direct", [])]


@dataclasses.dataclass
class Fed:
    sites: AgentFederation
    gateway: GatewayProcess
    public_key: str
    work: Path

    def cli(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "verbund.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **(env or {})},
            check=False,
        )

    def target(self) -> list[str]:
        return ["--url", self.gateway.url, "--admin-key", self.gateway.admin_key]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    work = tmp_path_factory.mktemp("site-partner")
    sites = AgentFederation(work, SITES)
    public = generate_key_file(work / "west-signing.pem")
    sites.sites["west"].config["trust"] = {"signing_key_file": str(work / "west-signing.pem")}
    gateway: GatewayProcess | None = None
    try:
        sites.start()
        config = federation(
            "ap-trust",
            work / "ap",
            sites.gateway_sites(),
            port=free_port(),
            gateway={"home_site": "west", "max_data_class": "confidential"},
            institutions=[institution("uni-a", home_region="NW")],
            trust={"checkpoint_interval": 0},
        )
        gateway = GatewayProcess(config, work / "ap", env=sites.gateway_env())
        gateway.serve()
        yield Fed(sites, gateway, public, work)
    finally:
        if gateway is not None:
            gateway.stop()
        sites.close()


def _sync(fed: Fed, site: str) -> dict[str, Any]:
    status = httpx.get(fed.gateway.url + "/status", timeout=10, trust_env=False).json()
    entry: dict[str, Any] = next(s for s in status["sites"] if s["name"] == site)
    return entry["catalogue"]


def _chat(fed: Fed, model: str, **headers: str) -> httpx.Response:
    return httpx.post(
        fed.gateway.url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Hallo"}], "max_tokens": 4},
        headers={"authorization": f"Bearer {fed.gateway.key}", **headers},
        timeout=30,
        trust_env=False,
    )


def test_the_agents_key_is_announced_and_it_signs_the_chain_head(fed: Fed) -> None:
    poll(lambda: _sync(fed, "west")["signing_key"] == "announced", "west's key", 30, 0.1)
    assert _sync(fed, "sued")["signing_key"] == "none"
    kept = fed.work / "kept"
    got = fed.cli("audit", "checkpoint", "--sites", "--keep", str(kept), *fed.target())
    assert got.returncode == 0, got.stdout + got.stderr
    assert "site west: signed entry #" in got.stdout and "site sued: no signing key" in got.stdout
    # checked against the checkpoints kept outside the access point, with the keys it
    # announces (west's announced key among them)
    verify = fed.cli("audit", "verify", "--checkpoints", str(kept), *fed.target())
    assert verify.returncode == 0, verify.stdout + verify.stderr
    held = fed.gateway.admin("GET", "/admin/audit/checkpoints")
    assert held["public_keys"]["west"] == fed.public_key
    assert any(c["signer"] == "west" for c in held["data"])
    verdict = fed.gateway.admin("GET", "/admin/audit/checkpoints/verify")
    assert verdict["ok"] and verdict["checkpoints_checked"] >= 1
    with fed.sites.sites["west"].agent.client() as agent:  # the site's own copy
        own = agent.get("/trust/checkpoints").json()["data"]
    assert [c["hash"] for c in own] == [c["hash"] for c in held["data"] if c["signer"] == "west"]


def test_a_sensitive_requests_receipt_verifies_and_an_edited_one_does_not(fed: Fed) -> None:
    r = _chat(
        fed, MODEL, **{"x-verbund-receipt": "required", "x-verbund-data-class": "confidential"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["x-verbund-site"] == "west"
    value = r.headers["x-verbund-receipt"]
    ok = fed.cli("receipt", "verify", value, "--key", fed.public_key)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "receipt OK: signed by site west (DE)" in ok.stdout
    receipt = Receipt.decode(value)
    assert receipt.request_id == r.headers["x-request-id"]
    assert (receipt.data_class, receipt.model) == ("confidential", MODEL)
    assert receipt.completion_tokens == r.json()["usage"]["completion_tokens"]
    edited = dataclasses.replace(receipt, jurisdiction="US").encode()
    bad = fed.cli("receipt", "verify", edited, "--key", fed.public_key)
    assert bad.returncode == 2 and "does NOT verify" in (bad.stdout + bad.stderr)


def test_a_receipt_bound_request_fails_closed_where_no_site_can_sign(fed: Fed) -> None:
    r = _chat(fed, "sued-llm", **{"x-verbund-receipt": "required"})
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "receipt_unavailable" and "sued" in err["message"]
    assert _chat(fed, "sued-llm").status_code == 200


def test_streams_with_receipts_work_with_the_openai_sdk(fed: Fed) -> None:
    client = openai.OpenAI(
        base_url=fed.gateway.url + "/v1",
        api_key=fed.gateway.key,
        http_client=httpx.Client(trust_env=False, timeout=30),
    )
    with client:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hallo"}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Verbund-Receipt": "required"},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None
    # the same stream read raw: the receipt follows [DONE] and verifies
    with (
        httpx.Client(trust_env=False, timeout=30) as http,
        http.stream(
            "POST",
            fed.gateway.url + "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True},
            headers={"authorization": f"Bearer {fed.gateway.key}", "x-verbund-receipt": "required"},
        ) as resp,
    ):
        raw = resp.read().decode()
    after = raw.partition("data: [DONE]")[2]
    value = after.split(": x-verbund-receipt ", 1)[1].split("\n", 1)[0]
    ok = fed.cli("receipt", "verify", value, "--key", fed.public_key)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def _served_at_west(fed: Fed, month: str) -> int:
    got = fed.gateway.admin("GET", "/admin/settlement", params={"month": month})
    return sum(u["requests"] for u in got["usage"] if u["site"] == "west")


def _stated_by_west(fed: Fed, month: str) -> int:
    with fed.sites.sites["west"].agent.client() as agent:
        lines = agent.get("/usage/statements", params={"month": month}).json()["lines"]
    return sum(int(ln["requests"]) for ln in lines)


def test_dropped_usage_records_show_against_the_agents_signed_statement(fed: Fed) -> None:
    month = datetime.now(UTC).strftime("%Y-%m")
    for i in range(4):
        assert _chat(fed, "west-llm").status_code == 200
        if i % 2:
            with httpx.stream(
                "POST",
                fed.gateway.url + "/v1/chat/completions",
                json={"model": "west-llm", "stream": True, "max_tokens": 4,
                      "messages": [{"role": "user", "content": "Hallo"}]},
                headers={"authorization": f"Bearer {fed.gateway.key}"},
                timeout=30,
                trust_env=False,
            ) as resp:  # fmt: skip
                assert resp.status_code == 200 and "[DONE]" in resp.read().decode()
    poll(
        lambda: _served_at_west(fed, month) == _stated_by_west(fed, month) > 0,
        "the access point's records and the site's meter to agree",
        30,
        0.2,
    )
    config = fed.gateway.config_path
    env = fed.sites.gateway_env()
    settle = ["settle", "--month", month, "--from-sites", "--config", str(config), *fed.target()]
    agreed = fed.cli(*settle, env=env)
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert "countersigned by: west" in agreed.stdout
    assert "agree with every signed statement" in agreed.stdout
    # the access point's operator drops two of west's records
    db = sqlite3.connect(fed.work / "ap" / "verbund.db")
    with db:
        db.execute(
            "DELETE FROM usage_records WHERE id IN (SELECT id FROM usage_records "
            "WHERE site = 'west' AND status = 'ok' LIMIT 2)"
        )
    db.close()
    short = fed.cli(*settle, env=env)
    assert short.returncode == 2, short.stdout + short.stderr
    stated = _stated_by_west(fed, month)
    assert f"DIFFERENCE at west for uni-a: access points recorded {stated - 2} requests" in (
        short.stdout
    )
    assert f"the site's signed statement says {stated} " in short.stdout


async def _job_at_site(store_path: Path, key_id: str, blob: str, canary: str) -> None:
    store = Store(f"sqlite+aiosqlite:///{store_path}")
    try:
        async with store.session() as s, s.begin():
            s.add(
                TrainingJobRow(
                    id="ftjob-canary1", kind="training", institution_id="uni-a",
                    key_id=key_id, access_point="ap", recipe="r", model="m",
                    training_file=blob, validation_file=None, data_class="internal",
                    params={}, resources={}, metadata_=None, suffix=canary, seed=0,
                    status="succeeded", runner_done=True, cancel_requested=False,
                    submit_attempts=0, metrics_offset=0, fine_tuned_model=None,
                    created_at=time.time(), cpu_seconds=0.0, gpu_seconds=0.0,
                )
            )  # fmt: skip
    finally:
        await store.aclose()


def _holding(root: Path, canary: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and canary in p.read_bytes()]


def test_erasure_reaches_the_site_and_a_canary_is_found_nowhere(fed: Fed) -> None:
    canary = f"canary-{os.getpid()}-erase-at-sites"
    key = fed.gateway.create_key("uni-a", "to-erase")
    up = httpx.post(
        fed.gateway.url + "/v1/files",
        files={"file": ("train.jsonl", (json.dumps({"text": canary}) + "\n").encode())},
        data={"purpose": "batch"},
        headers={"authorization": f"Bearer {key['key']}"},
        timeout=30,
        trust_env=False,
    )
    assert up.status_code == 200, up.text
    west = fed.sites.sites["west"]
    state = Path(west.config["agent"]["state_dir"])
    blob = "ftjob-canary1-train"
    with west.agent.client() as agent:
        assert agent.put(f"/blobs/{blob}", content=canary.encode()).status_code == 201
    (state / "models" / "ftjob-canary1").mkdir(parents=True)
    (state / "models" / "ftjob-canary1" / "model.json").write_text(canary)
    anyio.run(_job_at_site, state / "site.db", key["id"], blob, canary)
    assert _holding(state, canary.encode()) and _holding(fed.work / "ap", canary.encode())

    out = fed.cli("erase", "--key", key["id"], "--yes", *fed.target())
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["files"] == 1
    assert report["sites"]["west"] == {"jobs": 1, "artefacts": 1, "files": 1, "models": 0}
    assert "error" in report["sites"]["sued"] or report["sites"]["sued"]["jobs"] == 0
    assert _holding(state, canary.encode()) == []
    assert _holding(fed.work / "ap", canary.encode()) == []
    entries = fed.gateway.admin("GET", "/admin/audit")["data"]
    erased = [json.loads(e["after"]) for e in entries if e["action"] == "data.erase"]
    assert any(e["sites"]["west"]["jobs"] == 1 for e in erased)
