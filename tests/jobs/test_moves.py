"""A job's data moving agent to agent: the site holding it is preferred; when another
compliant site runs the job, the receiving agent pulls the file from the holder with a
grant the access point obtained, and the access point never holds the bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.training import blobs_csv
from tests.conftest import AgentLink, Gateway, GatewayFactory
from tests.jobs.helpers import (
    SLOW,
    create_training,
    events_of,
    jobs_config,
    kill_leftovers,
    wait_job,
)
from verbund.config import DataClass, FederationConfig, SiteState
from verbund.jobs._moves import move_refusal
from verbund.policy import RequestPolicy


class _Peers(httpx.AsyncBaseTransport):
    """The agents' client of each other, in-process: by host name to their apps."""

    def __init__(self, links: dict[str, AgentLink]) -> None:
        self.links = links
        self.calls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        site = request.url.host.removeprefix("agent-")
        self.calls.append(f"{site}{request.url.path}")
        return await self.links[site].handle_async_request(request)


@pytest.fixture
def cfg(tmp_path: Path) -> FederationConfig:
    c = jobs_config(tmp_path / "ap")
    data = c.model_dump(mode="json")
    data["gateway"]["max_data_class"] = "internal"  # confidential files lie at an agent
    return FederationConfig.model_validate(data)


@pytest.fixture(autouse=True)
def _no_leftovers(cfg: FederationConfig) -> Any:
    yield
    kill_leftovers(cfg)


async def _peered(gw: Gateway) -> _Peers:
    peers = _Peers(gw.links)
    for agent in gw.agents.values():
        await agent.peers.aclose()
        agent.peers = httpx.AsyncClient(transport=peers)
    return peers


async def _upload(gw: Gateway, text: str, data_class: str) -> str:
    r = await gw.client.post(
        "/v1/files",
        data={"purpose": "fine-tune"},
        files={"file": ("data.csv", text.encode(), "text/csv")},
        headers={**gw.auth(), "X-Verbund-Data-Class": data_class},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_the_site_holding_the_data_is_preferred_and_nothing_moves(
    gateway_factory: GatewayFactory, cfg: FederationConfig
) -> None:
    async with gateway_factory(cfg) as gw:
        gw.services.jobs.recipes.register(SLOW)
        peers = await _peered(gw)
        file_id = await _upload(gw, blobs_csv(), "confidential")
        job = await create_training(gw, recipe="test-slow", training_file=file_id)
        done = await wait_job(gw, job["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded" and done["site"] == "west"
        assert peers.calls == []


async def test_a_job_at_another_site_gets_its_data_agent_to_agent(
    gateway_factory: GatewayFactory, cfg: FederationConfig, tmp_path: Path
) -> None:
    canary = b"canary-moves-0042"
    text = blobs_csv().replace("f3", canary.decode(), 1)
    async with gateway_factory(cfg) as gw:
        gw.services.jobs.recipes.register(SLOW)
        peers = await _peered(gw)
        file_id = await _upload(gw, text, "confidential")  # at west, the home site
        await gw.services.lifecycle.set_state("west", SiteState.maintenance, "test")
        job = await create_training(gw, recipe="test-slow", training_file=file_id)
        done = await wait_job(gw, job["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded", done
        assert done["site"] == "sued"  # confidential: not ost (internal)
        assert peers.calls == [f"west/blobs/{_key_at(gw, 'west')}"]  # one pull, sued -> west
        messages = [e["message"] for e in await events_of(gw, job["id"])]
        assert f"File {file_id} moved from site west to site sued, agent to agent" in messages
    ap = tmp_path / "ap"
    assert _holding(ap / "site-west" / "files", canary)  # the file where it was uploaded
    assert _holding(ap / "site-sued" / "files", canary) == []  # its copy: gone with the job
    assert _holding(ap / "files", canary) == [] and _holding(ap / "site-ost", canary) == []


def _key_at(gw: Gateway, site: str) -> str:
    folder = Path(gw.agents[site].blobs.root)
    (found,) = [p.name for p in folder.iterdir() if p.is_file()]
    return found


async def test_a_grant_reads_one_blob_once_and_opens_nothing_else(
    gateway_factory: GatewayFactory, cfg: FederationConfig
) -> None:
    async with gateway_factory(cfg) as gw:
        await _upload(gw, blobs_csv(), "confidential")
        key = _key_at(gw, "west")
        west = gw.services.jobs.links["west"]
        grant = (await west.grant(key, "sued", "confidential"))["grant"]
        async with httpx.AsyncClient(transport=gw.links["west"], base_url="http://w") as c:
            peer = {"authorization": f"Bearer {grant}"}
            assert (await c.get("/catalogue", headers=peer)).status_code == 401
            assert (await c.delete(f"/blobs/{key}", headers=peer)).status_code == 401
            assert (await c.get("/blobs/f-other", headers=peer)).status_code == 401
            first = await c.get(f"/blobs/{key}", headers=peer)
            assert first.status_code == 200 and first.content == blobs_csv().encode()
            assert (await c.get(f"/blobs/{key}", headers=peer)).status_code == 401  # used up
            forged = grant[:-4] + ("AAAA" if not grant.endswith("AAAA") else "BBBB")
            assert (
                await c.get(f"/blobs/{key}", headers={"authorization": f"Bearer {forged}"})
            ).status_code == 401


async def test_a_site_never_fetches_data_above_its_class(
    gateway_factory: GatewayFactory, cfg: FederationConfig
) -> None:
    async with gateway_factory(cfg) as gw:
        peers = await _peered(gw)
        await _upload(gw, blobs_csv(), "confidential")
        key = _key_at(gw, "west")
        grant = (await gw.services.jobs.links["west"].grant(key, "ost", "confidential"))["grant"]
        source = {"site": "west", "url": "http://agent-west", "key": key, "grant": grant}
        ost = gw.services.jobs.links["ost"]
        with pytest.raises(Exception) as refused:
            await ost.fetch("in-forged", "confidential", source)
        assert getattr(refused.value, "code", "") == "data_class_refused"
        assert peers.calls == []  # refused before anything moved
        assert list(Path(gw.agents["ost"].blobs.root).glob("*")) == []


async def test_the_access_point_fails_closed_when_the_target_may_not_hold_the_file(
    gateway_factory: GatewayFactory, cfg: FederationConfig
) -> None:
    async with gateway_factory(cfg) as gw:
        gw.services.jobs.recipes.register(SLOW)
        peers = await _peered(gw)
        file_id = await _upload(gw, blobs_csv(), "confidential")
        await gw.services.lifecycle.set_state("west", SiteState.maintenance, "test")
        facts = {n: s.config for n, s in gw.services.federation.sites.items()}
        # what routing believes of sued changes after placement (e.g. a new catalogue)
        lowered = facts["sued"].model_copy(update={"max_data_class": DataClass.internal})
        gw.services.jobs.handover.site_facts = lambda n: lowered if n == "sued" else facts.get(n)
        job = await create_training(gw, recipe="test-slow", training_file=file_id)
        done = await wait_job(gw, job["id"], ("failed",))
        assert done["error"]["code"] == "policy_violation"
        assert "may not move from site west to site sued" in done["error"]["message"]
        assert "max_data_class internal" in done["error"]["message"]
        assert peers.calls == []


def test_move_refusal_names_the_constraint() -> None:
    from verbund.config import SiteConfig

    policy = RequestPolicy(data_class=DataClass.sensitive)
    low = SiteConfig(name="ost", region="SN", max_data_class=DataClass.confidential)
    refusal = move_refusal("file-1", "west", low, policy)
    assert refusal is not None and "max_data_class confidential" in refusal.message
    assert (
        move_refusal(
            "file-1", "west", low.model_copy(update={"max_data_class": DataClass.sensitive}), policy
        )
        is None
    )
    fenced = RequestPolicy(data_class=DataClass.public, allowed_regions=frozenset({"NW"}))
    refusal = move_refusal("file-1", "west", low, fenced)
    assert refusal is not None and "allowed_regions" in refusal.message
    unknown = move_refusal("file-1", "west", None, policy)
    assert unknown is not None and "not part of this federation" in unknown.message


async def test_a_holder_away_makes_the_job_wait_not_fail(
    gateway_factory: GatewayFactory, cfg: FederationConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("verbund.jobs._handover.MOVE_RETRY_SECONDS", 0.0)
    async with gateway_factory(cfg) as gw:
        gw.services.jobs.recipes.register(SLOW)
        await _peered(gw)
        file_id = await _upload(gw, blobs_csv(), "confidential")
        await gw.services.lifecycle.set_state("west", SiteState.maintenance, "test")
        gw.links["west"].down = True  # west's agent cannot be reached
        job = await create_training(gw, recipe="test-slow", training_file=file_id)
        for _ in range(6):
            await gw.tick()
        waiting = (await gw.client.get(f"/v1/training/jobs/{job['id']}", headers=gw.auth())).json()
        assert waiting["status"] not in ("failed", "succeeded") and waiting["site"] == "sued"
        messages = [e["message"] for e in await events_of(gw, job["id"])]
        notes = [m for m in messages if m.startswith(f"Waiting to move file {file_id}")]
        assert len(notes) == 1 and "unreachable" in notes[0]  # said once, not at every step
        gw.links["west"].down = False
        done = await wait_job(gw, job["id"], ("succeeded", "failed"))
        assert done["status"] == "succeeded" and done["site"] == "sued"


async def test_bad_transfer_requests_are_400_and_operators_403(
    gateway_factory: GatewayFactory, cfg: FederationConfig
) -> None:
    from harness.agent import OPERATOR_KEY_ENV, keys_for

    async with gateway_factory(cfg) as gw:
        ap_key = gw.services.jobs.links["sued"].client.auth_headers()
        async with httpx.AsyncClient(transport=gw.links["sued"], base_url="http://s") as c:
            assert (await c.post("/transfers", content=b"{", headers=ap_key)).status_code == 400
            source = {"site": "west", "url": "ftp://x", "key": "f-1", "grant": "g"}
            for body in (
                {"key": "in-1", "data_class": "internal"},  # no source
                {"key": "../x", "data_class": "internal", "source": source},
                {"key": "in-1", "data_class": "secret", "source": source},
                {"key": "in-1", "data_class": "internal", "source": source},  # not http(s)
                {"key": "in-1", "data_class": "internal", "source": {**source, "site": "sued",
                                                                     "url": "http://x"}},
            ):  # fmt: skip
                r = await c.post("/transfers", json=body, headers=ap_key)
                assert r.status_code == 400, (body, r.text)
                assert set(r.json()["error"]) == {"message", "type", "code", "param"}
            operator = {"authorization": f"Bearer {keys_for('sued')[OPERATOR_KEY_ENV]}"}
            body = {"key": "f-1", "to_site": "west", "data_class": "internal"}
            assert (
                await c.post("/transfers/grants", json=body, headers=operator)
            ).status_code == 403
            assert (await c.post("/transfers/grants", json=body, headers=ap_key)).status_code == 404
        assert list(Path(gw.agents["sued"].blobs.root).glob("*")) == []
