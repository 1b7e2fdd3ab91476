"""Every route that spends capacity goes through the one admission: a hard-stopped budget
and an exhausted quota refuse each of them, and each outcome leaves exactly one usage
record with the route's endpoint name and the outcome's status."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from harness.training import blobs_csv, put_file
from tests.batch.helpers import chat_line, jsonl, upload
from tests.conftest import MODEL, Gateway, GatewayFactory, federation_dict, with_agents
from tests.gateway.test_oip_routes import DIGITS, GOOD, fakes_for
from tests.jobs.test_serving import TINY
from verbund.accounting import UsageRecord
from verbund.config import FederationConfig, parse_config
from verbund.jobs import FineTunedModel
from verbund.store import UsageRow
from verbund.tenancy import quota_limits

FT_MODEL = "ft:centroid-classifier:uni-a:tiny"
FT_INPUT = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 0.0]}]}


def spending_config(tmp_path: Path, **uni_a: Any) -> FederationConfig:
    """The test federation with OIP backends, job runners, and ``uni_a``'s settings."""
    data = with_agents(federation_dict(tmp_path))
    for site in data["sites"]:
        site["backends"].append(
            {
                "name": f"{site['name']}-oip",
                "kind": "oip",
                "url": f"http://{site['name']}-oip.invalid:8080",
                "models": [DIGITS],
            }
        )
        site["runner"] = {
            "kind": "local",
            "cpus": 2,
            "memory_mb": 4096,
            "workdir": str(tmp_path / "jobs" / site["name"]),
        }
    data["models"].append({"name": DIGITS, "kind": "oip"})
    data["institutions"][0].update(uni_a)
    return parse_config(data)


@dataclass(frozen=True)
class Spender:
    """One route that spends capacity: how to call it, and its usage endpoint name."""

    name: str
    endpoint: str
    call: Callable[[Gateway], Awaitable[httpx.Response]]


async def _chat(gw: Gateway) -> httpx.Response:
    return await gw.chat()


async def _chat_stream(gw: Gateway) -> httpx.Response:
    return await gw.chat(stream=True)


async def _completion(gw: Gateway) -> httpx.Response:
    body = {"model": MODEL, "prompt": "Es war einmal"}
    return await gw.client.post("/v1/completions", json=body, headers=gw.auth())


async def _embedding(gw: Gateway) -> httpx.Response:
    body = {"model": "emb", "input": "Rechenzentrum"}
    return await gw.client.post("/v1/embeddings", json=body, headers=gw.auth())


async def _oip(gw: Gateway) -> httpx.Response:
    return await gw.client.post(f"/v2/models/{DIGITS}/infer", json=GOOD, headers=gw.auth())


async def _ft(gw: Gateway) -> httpx.Response:
    return await gw.client.post(f"/v2/models/{FT_MODEL}/infer", json=FT_INPUT, headers=gw.auth())


async def _batch(gw: Gateway) -> httpx.Response:
    uploaded = await upload(gw, jsonl([chat_line("a"), chat_line("b")]))
    assert uploaded.status_code == 200, uploaded.text
    body = {
        "input_file_id": uploaded.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    return await gw.client.post("/v1/batches", json=body, headers=gw.auth())


async def _job(gw: Gateway) -> httpx.Response:
    put_file(gw.services.config, "uni-a", "file-blobs", blobs_csv())
    body = {"recipe": "centroid-classifier", "training_file": "file-blobs"}
    return await gw.client.post("/v1/training/jobs", json=body, headers=gw.auth())


SPENDERS = [
    Spender("chat", "/v1/chat/completions", _chat),
    Spender("chat-stream", "/v1/chat/completions", _chat_stream),
    Spender("completions", "/v1/completions", _completion),
    Spender("embeddings", "/v1/embeddings", _embedding),
    Spender("oip-infer", "/v2/infer", _oip),
    Spender("ft-infer", "/v2/infer", _ft),
    Spender("batch-create", "/v1/batches", _batch),
    Spender("job-create", "/v1/training/jobs", _job),
]


@pytest.fixture
def start(gateway_factory: GatewayFactory, tmp_path: Path) -> Callable[..., Any]:
    """An access point that can serve every spending route, with ``uni_a`` settings."""

    def factory(**uni_a: Any) -> Any:
        cfg = spending_config(tmp_path, **uni_a)
        return _started(gateway_factory(cfg, fakes_for(cfg)), tmp_path)

    return factory


@contextlib.asynccontextmanager
async def _started(gateway: Any, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with gateway as gw:
        artefacts = tmp_path / "ft-tiny"
        artefacts.mkdir()
        (artefacts / "model.json").write_text(json.dumps(TINY))
        # trained at west: kept and served there; the access point knows where
        at_site = FineTunedModel(
            FT_MODEL, "uni-a", "ftjob-1", "x", "r", artefacts, 0.0, True, site="west"
        )
        gw.agents["west"].jobs.models.add(at_site)
        gw.services.jobs.models.add(dataclasses.replace(at_site, path=None))
        sink = gw.services.accounting.usage
        sink.subscribers = (*sink.subscribers, EMITTED.append)
        yield gw
        EMITTED.clear()


EMITTED: list[UsageRecord] = []  # what the usage sink handed its subscribers


async def records_of(gw: Gateway, request_id: str) -> list[UsageRow]:
    await gw.services.accounting.spool.flush()
    async with gw.services.store.session() as s:
        q = select(UsageRow).where(UsageRow.request_id == request_id)
        return list((await s.execute(q)).scalars())


async def one_record(gw: Gateway, resp: httpx.Response, endpoint: str) -> UsageRow:
    request_id = resp.headers["x-request-id"]
    rows = await records_of(gw, request_id)
    assert len(rows) == 1, [(r.endpoint, r.status) for r in rows]
    # the store drops a repeated record; the sink's other subscribers (quotas, budgets,
    # metrics) would count it twice: emitted once, too
    assert [r.request_id for r in EMITTED].count(request_id) == 1
    assert rows[0].endpoint == endpoint
    return rows[0]


def body_error(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    err: dict[str, Any] = body["error"] if isinstance(body["error"], dict) else {}
    if not err:  # OIP v2's error shape: {"error": "<message>"}
        err = {"message": body["error"]}
    return err


@pytest.mark.parametrize("spender", SPENDERS, ids=lambda s: s.name)
async def test_admitted_request_leaves_one_ok_record(
    start: Callable[..., Any], spender: Spender
) -> None:
    async with start() as gw:
        resp = await spender.call(gw)
        assert resp.status_code == 200, resp.text
        row = await one_record(gw, resp, spender.endpoint)
        assert (row.status, row.http_status, row.institution_id) == ("ok", 200, "uni-a")


@pytest.mark.parametrize("spender", SPENDERS, ids=lambda s: s.name)
async def test_hard_stopped_budget_refuses(start: Callable[..., Any], spender: Spender) -> None:
    async with start(budget_tokens_per_month=1000, budget_hard_stop=True) as gw:
        gw.services.accounting.usage.emit(  # this month's spend, as a served request left it
            UsageRecord(
                "earlier",
                "ap-test",
                "uni-a",
                "key_x",
                "/v1/chat/completions",
                MODEL,
                site="west",
                prompt_tokens=600,
                completion_tokens=400,
            )
        )
        calls_before = gw.upstream_calls()
        resp = await spender.call(gw)
        assert resp.status_code == 429, resp.text
        err = body_error(resp)
        assert "used up its monthly budget" in err["message"]
        if spender.endpoint.startswith("/v1"):
            assert err["code"] == "insufficient_quota"
        assert gw.upstream_calls() == calls_before
        row = await one_record(gw, resp, spender.endpoint)
        assert (row.status, row.http_status) == ("rejected", 429)


@pytest.mark.parametrize("spender", SPENDERS, ids=lambda s: s.name)
async def test_exhausted_quota_refuses(start: Callable[..., Any], spender: Spender) -> None:
    async with start(requests_per_minute=1) as gw:
        svc = gw.services
        inst = svc.institutions.get("uni-a")
        key = await svc.keys.resolve(gw.keys["uni-a"])
        assert inst is not None and key is not None
        await svc.coordination.quotas.admit("earlier", quota_limits(inst, key), 0)
        calls_before = gw.upstream_calls()
        resp = await spender.call(gw)
        assert resp.status_code == 429, resp.text
        err = body_error(resp)
        assert "may use 1 requests per minute" in err["message"]
        if spender.endpoint.startswith("/v1"):
            assert err["code"] == "rate_limit_exceeded"
        assert gw.upstream_calls() == calls_before
        row = await one_record(gw, resp, spender.endpoint)
        assert (row.status, row.http_status) == ("rejected", 429)


INFERENCE = [s for s in SPENDERS if s.name in ("chat", "completions", "embeddings", "oip-infer")]
# a stream that fails before its first byte is an ordinary error answer
INFERENCE.append(SPENDERS[1])


@pytest.mark.parametrize("spender", INFERENCE, ids=lambda s: s.name)
async def test_upstream_failure_leaves_one_error_record(
    start: Callable[..., Any], spender: Spender
) -> None:
    async with start() as gw:
        for fake in gw.fakes.values():
            fake.mode, fake.status = "status", 500
        resp = await spender.call(gw)
        assert resp.status_code == 502, resp.text
        row = await one_record(gw, resp, spender.endpoint)
        assert (row.status, row.http_status) == ("error", 502)
        assert row.site  # the backend that failed is named


@pytest.mark.parametrize("spender", INFERENCE, ids=lambda s: s.name)
async def test_policy_refusal_leaves_one_rejected_record(
    start: Callable[..., Any], spender: Spender
) -> None:
    async with start(allowed_regions=["XX"]) as gw:
        resp = await spender.call(gw)
        assert resp.status_code == 403, resp.text
        row = await one_record(gw, resp, spender.endpoint)
        assert (row.status, row.http_status) == ("rejected", 403)


async def test_job_admitted_against_its_requested_resources(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    """Money left for 10 CPU hours: a job asking for 1 CPU for 5 hours is admitted and
    held; a second one of 8 hours no longer fits; once the first reports its real use,
    the hold is replaced by what it cost."""
    data = spending_config(tmp_path).model_dump(mode="json")
    for site in data["sites"]:
        site["prices"] = {"cpu_hour": "1.00"}
    data["institutions"][0].update(budget_per_month="10.00", budget_hard_stop=True)
    cfg = parse_config(data)
    async with gateway_factory(cfg, fakes_for(cfg)) as gw:
        put_file(cfg, "uni-a", "file-blobs", blobs_csv())

        async def job(hours: int) -> httpx.Response:
            body = {
                "recipe": "centroid-classifier",
                "training_file": "file-blobs",
                "resources": {"cpus": 1, "time_limit_minutes": hours * 60},
            }
            return await gw.client.post("/v1/training/jobs", json=body, headers=gw.auth())

        first = await job(5)
        assert first.status_code == 200, first.text
        budgets = gw.services.accounting.budgets
        assert budgets.held("uni-a") == 5
        second = await job(8)
        assert second.status_code == 429
        assert "may cost 8.00 EUR" in body_error(second)["message"]
        job_id = first.json()["id"]
        gw.services.accounting.usage.emit(  # what the job's runner reports when it ends
            UsageRecord(
                job_id,
                "ap-test",
                "uni-a",
                "key_x",
                "/v1/training/jobs",
                "centroid-classifier",
                site="west",
                cpu_seconds=1800.0,
            )
        )
        assert budgets.held("uni-a") == 0
        assert budgets.spend("uni-a").cost == pytest.approx(0.5)
        assert (await job(8)).status_code == 200
