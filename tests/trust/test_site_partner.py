"""A site's agent as a partner that signs on its own (in-process agent and access point):
its key announced and taken (never over a configured one), checkpoints it signs and
refuses, receipts for the requests it relays, its own metering and signed statements,
and erasure of a subject's jobs' data at the site."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text

from tests.agent.conftest import SITE, InProcessAgent
from tests.conftest import MODEL
from tests.fakes import FakeBackend
from tests.trust.chain import append, partner, truncate
from verbund.agent._trust import refusal
from verbund.audit import AuditLog
from verbund.store import AuditRow, TrainingJobRow, UsageRow
from verbund.trust import (
    Checkpoint,
    PartnerKeys,
    Receipt,
    SigningKey,
    UsageStatement,
    countersign,
    sign_statement,
)

AGENT_KEY_ENV = "WEST_AGENT_KEY"
SIGNING_ENV = "VERBUND_SITE_SIGNING_KEY"


def seeded(name: str) -> tuple[SigningKey, str]:
    """A key and its raw seed (base64), as ``signing_key_env`` holds it."""
    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return SigningKey(name, key), base64.b64encode(seed).decode()


class Site:
    def __init__(self, gw: Any, agent: InProcessAgent, fakes: dict[str, FakeBackend]) -> None:
        self.gw, self.agent, self.fakes = gw, agent, fakes

    async def chat(self, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        payload = {"model": MODEL, "messages": [{"role": "user", "content": "Hallo"}], **body}
        return await self.gw.client.post(
            "/v1/chat/completions", json=payload, headers={**self.gw.auth(), **(headers or {})}
        )


SiteFactory = Callable[..., Any]


@pytest.fixture
def site_factory(linked_factory: Any) -> SiteFactory:
    """West behind its agent (relay ingress by default) with a key of its own, and the
    access point taking it; ``configured``: the key the access point's ``[trust.partners]``
    holds for west instead."""

    @asynccontextmanager
    async def factory(
        *, signs: bool = True, configured: str | None = None, ingress: str = "agent"
    ) -> AsyncIterator[tuple[Site, SigningKey]]:
        key, seed = seeded(SITE)
        async with linked_factory(
            [MODEL],
            ingress,
            announce={"max_data_class": "confidential"},
            agent_env={SIGNING_ENV: seed} if signs else {},
            configure=lambda ap: (
                ap.update(trust={"partners": {SITE: configured}}) if configured else None
            ),
        ) as linked:
            await linked.refresh()
            yield Site(linked.gw, linked.agent, linked.fakes), key

    return factory


# --- pure decisions ------------------------------------------------------------------------


def test_an_announced_key_never_replaces_a_configured_one() -> None:
    configured, other = partner("west"), partner("west")
    keys = PartnerKeys({"west": configured.public_b64})
    assert keys.announce("west", configured.public_b64) == "configured"
    assert keys.announce("west", other.public_b64).startswith("refused")
    msg = b"m"
    assert keys.verify("west", msg, configured.sign(msg))  # the configured key still counts
    assert not keys.verify("west", msg, other.sign(msg))
    open_keys = PartnerKeys({})
    assert open_keys.announce("east", other.public_b64) == "announced"
    assert open_keys.verify("east", msg, other.sign(msg))
    assert open_keys.announce("east", "not base64!").startswith("refused")
    assert not open_keys.known("east")
    assert open_keys.announce("east", "") == "none"


def test_a_site_refuses_heads_that_contradict_what_it_signed() -> None:
    signed = [Checkpoint("west", "federation", 5, "a" * 64, 1.0, "s")]
    assert refusal(signed, 6, "b" * 64) is None
    assert refusal(signed, 5, "a" * 64) is None
    assert "rewritten or forked" in (refusal(signed, 5, "b" * 64) or "")
    assert "truncated" in (refusal(signed, 4, "c" * 64) or "")
    assert refusal([], 0, "0" * 64) is None


# --- the agent signs on its own -----------------------------------------------------------


async def test_the_agent_announces_its_key_and_the_access_point_takes_it(
    site_factory: SiteFactory,
) -> None:
    async with site_factory() as (site, key):
        sync = site.gw.services.health.catalogues
        assert sync.sites[SITE].signing_key == "announced"
        assert site.gw.services.federation.sites[SITE].signs_receipts
        assert site.gw.services.checkpoints.keys.as_b64()[SITE] == key.public_b64
    other = partner(SITE)
    async with site_factory(configured=other.public_b64) as (site, _):
        state = site.gw.services.health.catalogues.sites[SITE]
        assert state.signing_key.startswith("refused")
        assert not site.gw.services.federation.sites[SITE].signs_receipts
        assert site.gw.services.checkpoints.keys.as_b64()[SITE] == other.public_b64


async def test_the_site_signs_the_chain_head_and_the_access_point_keeps_it(
    site_factory: SiteFactory,
) -> None:
    async with site_factory() as (site, key):
        gw = site.gw
        r = await gw.client.post(
            "/admin/audit/checkpoints", json={"sites": True}, headers=gw.admin()
        )
        assert r.status_code == 200, r.text
        assert r.json()["sites"][SITE].startswith("signed entry #")
        held = (await gw.client.get("/admin/audit/checkpoints", headers=gw.admin())).json()
        mine = [c for c in held["data"] if c["signer"] == SITE]
        assert len(mine) == 1 and Checkpoint.from_json(mine[0]).valid(gw.services.checkpoints.keys)
        # the site keeps its own copy
        async with site.agent.http() as http:
            own = (await http.get("/trust/checkpoints")).json()
        assert own["public_key"] == key.public_b64 and own["data"] == mine
        # the chain grows, the site signs again; then the access point deletes its
        # newest entries and the checkpoints it holds: the site, which kept its own
        # copies, refuses the shorter head
        await append(gw.services.store, gw.services.audit, 3)
        again = await gw.client.post(
            "/admin/audit/checkpoints", json={"sites": True}, headers=gw.admin()
        )
        assert again.json()["sites"][SITE].startswith("signed")
        entries = (await gw.services.audit.linked_hashes())[1]
        await truncate(gw.services.store, len(entries) - 2)
        async with gw.services.store.session() as s, s.begin():
            await s.execute(text("DELETE FROM audit_checkpoints"))
        refused = await gw.client.post(
            "/admin/audit/checkpoints", json={"sites": True}, headers=gw.admin()
        )
        assert refused.status_code == 200, refused.text
        said = refused.json()["sites"][SITE]
        assert said.startswith("refused") and "truncated" in said
        async with site.agent.http() as http:  # what the site signed is still there
            assert len((await http.get("/trust/checkpoints")).json()["data"]) == 2


# --- receipts --------------------------------------------------------------------------


async def test_a_required_receipt_is_signed_by_the_serving_site(
    site_factory: SiteFactory,
) -> None:
    async with site_factory() as (site, key):
        keys = PartnerKeys({SITE: key.public_b64})
        r = await site.chat(
            {"x-verbund-receipt": "required", "x-verbund-data-class": "confidential"}
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-verbund-site"] == SITE
        receipt = Receipt.decode(r.headers["x-verbund-receipt"])
        assert receipt.valid(keys)
        assert (receipt.site, receipt.request_id) == (SITE, r.headers["x-request-id"])
        assert (receipt.data_class, receipt.model) == ("confidential", MODEL)
        assert (receipt.prompt_tokens, receipt.completion_tokens) == (7, 4)
        assert (
            "Hallo" not in base64.urlsafe_b64decode(r.headers["x-verbund-receipt"] + "==").decode()
        )
        # not asked for: none
        plain = await site.chat()
        assert "x-verbund-receipt" not in plain.headers
        # a stream: the receipt follows [DONE] as an SSE comment
        async with site.gw.client.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True},
            headers={**site.gw.auth(), "x-verbund-receipt": "required"},
        ) as resp:
            raw = (await resp.aread()).decode()
        assert resp.status_code == 200
        before, _, after = raw.partition("data: [DONE]")
        assert before and ": x-verbund-receipt " in after
        value = after.split(": x-verbund-receipt ", 1)[1].split("\n", 1)[0]
        streamed = Receipt.decode(value)
        assert streamed.valid(keys) and streamed.request_id == resp.headers["x-request-id"]
        # a bad header value is refused before anything is sent
        calls = len(site.fakes["west-a"].calls)
        bad = await site.chat({"x-verbund-receipt": "please"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Verbund-Receipt"
        assert len(site.fakes["west-a"].calls) == calls


async def test_a_receipt_bound_request_fails_closed_without_a_signing_site(
    site_factory: SiteFactory,
) -> None:
    async with site_factory(signs=False) as (site, _):
        r = await site.chat({"x-verbund-receipt": "required"})
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["code"] == "receipt_unavailable" and "receipt" in err["message"]
        assert not site.fakes["west-a"].calls and not site.fakes["sued-1"].calls
        assert (await site.chat()).status_code == 200  # without the constraint: served


async def test_an_institutions_policy_requires_receipts(site_factory: SiteFactory) -> None:
    async with site_factory() as (site, key):
        gw = site.gw
        r = await gw.client.patch(
            "/admin/institutions/uni-a", json={"require_receipts": True}, headers=gw.admin()
        )
        assert r.status_code == 200, r.text
        for _ in range(4):  # never the direct site sued, which cannot sign
            answer = await site.chat()
            assert answer.status_code == 200 and answer.headers["x-verbund-site"] == SITE
            assert Receipt.decode(answer.headers["x-verbund-receipt"]).valid(
                PartnerKeys({SITE: key.public_b64})
            )
        assert not site.fakes["sued-1"].calls


# --- the site's own metering -----------------------------------------------------------


async def test_the_site_meters_and_signs_what_it_served(site_factory: SiteFactory) -> None:
    month = datetime.now(UTC).strftime("%Y-%m")
    async with site_factory() as (site, key):
        gw = site.gw
        for i in range(5):
            assert (await site.chat(stream=i % 2 == 1)).status_code == 200
        await gw.services.accounting.spool.flush()
        raw = await gw.services.agents[SITE].usage_statement(month)
        statement = UsageStatement.from_json(raw)
        keys = PartnerKeys({SITE: key.public_b64})
        assert statement.valid(keys)
        served = [ln for ln in statement.lines if ln["institution"] == "uni-a"]
        assert served and served[0]["requests"] == len(site.fakes["west-a"].calls)
        settlement = (
            await gw.client.get("/admin/settlement", params={"month": month}, headers=gw.admin())
        ).json()
        assert countersign(settlement, [statement], keys).differences == []
        async with gw.services.store.session() as s, s.begin():  # the access point drops one
            row = (await s.execute(select(UsageRow.id).where(UsageRow.site == SITE))).first()
            assert row is not None
            await s.execute(text("DELETE FROM usage_records WHERE id = :i"), {"i": row[0]})
        short = (
            await gw.client.get("/admin/settlement", params={"month": month}, headers=gw.admin())
        ).json()
        (diff,) = countersign(short, [statement], keys).differences
        assert (diff["site"], diff["missing_requests"]) == (SITE, 1)
        # nothing of the text in the site's store
        async with site.agent.services.store.session() as s:
            rows = (await s.execute(select(UsageRow))).scalars().all()
        assert rows and all(r.key_id == "" and r.institution_id == "uni-a" for r in rows)


# --- erasure at the site -----------------------------------------------------------------


async def test_erasure_removes_the_subjects_jobs_data_at_the_site(
    site_factory: SiteFactory,
) -> None:
    canary = b"canary-7f3e9a1c-erase-me"
    async with site_factory() as (site, _):
        gw = site.gw
        key_id = (await gw.client.get("/admin/keys", headers=gw.admin())).json()["data"][0]["id"]
        svc = site.agent.services
        blob = "file-erasecanary0001"
        await svc.blobs.put(blob, canary)  # a staged training file at the site
        artefacts = svc.jobs.artefacts.models_dir / "ftjob-erase1"
        artefacts.mkdir(parents=True)
        (artefacts / "model.json").write_bytes(canary)
        await _job_row(svc, key_id, blob)
        r = await gw.client.post("/admin/erasure", json={"key_id": key_id}, headers=gw.admin())
        assert r.status_code == 200, r.text
        assert r.json()["sites"][SITE] == {"jobs": 1, "artefacts": 1, "files": 1, "models": 0}
        async with svc.store.session() as s:
            assert (await s.get(TrainingJobRow, "ftjob-erase1")) is None
        assert not artefacts.exists()
        found = [p for p in svc.state_dir.rglob("*") if p.is_file() and canary in p.read_bytes()]
        assert found == []
        async with gw.services.store.session() as s:
            entry = (
                await s.execute(select(AuditRow).where(AuditRow.action == "data.erase"))
            ).scalar_one()
        assert '"jobs": 1' in entry.after or '"jobs":1' in entry.after


async def _job_row(
    svc: Any, key_id: str, blob: str, *, cpu_seconds: float = 0.0, finished_at: float | None = None
) -> None:
    async with svc.store.session() as s, s.begin():
        s.add(
            TrainingJobRow(
                id="ftjob-erase1",
                kind="training",
                institution_id="uni-a",
                key_id=key_id,
                access_point="ap",
                recipe="r",
                model="m",
                training_file=blob,
                validation_file=None,
                data_class="internal",
                params={},
                resources={},
                metadata_=None,
                suffix="",
                seed=0,
                status="succeeded",
                runner_done=True,
                cancel_requested=False,
                submit_attempts=0,
                metrics_offset=0,
                fine_tuned_model=None,
                created_at=time.time(),
                finished_at=finished_at,
                cpu_seconds=cpu_seconds,
                gpu_seconds=0.0,
            )
        )


# --- node time ----------------------------------------------------------------------------


def test_node_time_is_signed_and_statements_without_it_read_as_before() -> None:
    key = partner("west")
    keys = PartnerKeys({"west": key.public_b64})
    plain = {"institution": "uni-a", "model": "m", "requests": 2}
    plain |= {"prompt_tokens": 3, "completion_tokens": 4}
    old = sign_statement(key, "2026-11", [plain], 1.5)
    assert "cpu_seconds" not in old.to_json()["lines"][0]  # the format as before
    assert UsageStatement.from_json(old.to_json()).valid(keys)
    timed = sign_statement(key, "2026-11", [{**plain, "cpu_seconds": 12.5}], 1.5)
    again = UsageStatement.from_json(timed.to_json())
    assert again.valid(keys) and again.lines[0]["cpu_seconds"] == 12.5
    edited = timed.to_json()
    edited["lines"][0]["cpu_seconds"] = 1.0
    assert not UsageStatement.from_json(edited).valid(keys)
    edited["lines"][0].pop("cpu_seconds")
    assert not UsageStatement.from_json(edited).valid(keys)


async def test_the_sites_statement_carries_its_jobs_and_on_demand_node_time(
    site_factory: SiteFactory,
) -> None:
    month = datetime.now(UTC).strftime("%Y-%m")
    async with site_factory() as (site, key):
        svc = site.agent.services
        await _job_row(svc, "key-1", "file-x", cpu_seconds=12.5, finished_at=time.time())
        async with svc.store.session() as s, s.begin():
            await AuditLog(svc.store).append(
                s,
                actor="agent",
                action="on_demand.stop",
                target="smol-od-1",
                after={"model": MODEL, "cpu_seconds": 30.0, "gpu_seconds": 7.25},
            )
        statement = UsageStatement.from_json(
            await site.gw.services.agents[SITE].usage_statement(month)
        )
        assert statement.valid(PartnerKeys({SITE: key.public_b64}))
        by = {(ln["institution"], ln["model"]): ln for ln in statement.lines}
        job = by[("uni-a", "m")]
        assert (job["requests"], job["cpu_seconds"]) == (1, 12.5)
        shared = by[("", MODEL)]
        assert (shared["requests"], shared["cpu_seconds"], shared["gpu_seconds"]) == (0, 30.0, 7.25)
        checked = countersign(
            {"month": month, "inputs": {"sha256": "x"}, "usage": []},
            [statement],
            PartnerKeys({SITE: key.public_b64}),
        )
        assert {(n["institution"], n["cpu_seconds"]) for n in checked.node_time} == {
            ("uni-a", 12.5),
            ("", 30.0),
        }
