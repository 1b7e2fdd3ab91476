"""The agent's catalogue: its content, conditional requests and long-polling."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.agent.conftest import OPERATOR_KEY, AgentFactory, InProcessAgent, site_dict
from verbund.agent import parse_site_config
from verbund.errors import ConfigError


async def _offer(agent: InProcessAgent, **changes: object) -> None:
    svc = agent.services
    data = svc.config.model_dump(mode="json", exclude_defaults=True)
    data.update(changes)
    await svc.apply_config(parse_site_config(data))


async def test_the_catalogue_announces_the_site(
    agent_factory: AgentFactory, tmp_path: Path
) -> None:
    cfg = parse_site_config(
        site_dict(
            tmp_path,
            site={"name": "west", "max_data_class": "confidential", "certifications": ["ISO27001"]},
            backends=[
                {"name": "b1", "url": "http://b1.invalid:1", "models": ["m"], "max_concurrency": 8}
            ],
            models=[{"name": "m", "kind": "chat", "license": "MIT", "context_length": 2048}],
            prices={"models": {"m": {"input_per_million": "0.5"}}},
        )
    )
    async with agent_factory(cfg) as agent, agent.http() as http:
        r = await http.get("/catalogue")
        assert r.status_code == 200 and r.headers["etag"]
        doc = r.json()
    assert doc["site"] == {
        "name": "west",
        "region": "NW",
        "jurisdiction": "DE",
        "max_data_class": "confidential",
        "certifications": ["ISO27001"],
        "state": "active",
        "signing_key": "",  # no [trust] key: the agent signs nothing
    }
    (model,) = doc["models"]
    assert (model["kind"], model["license"], model["context_length"]) == ("chat", "MIT", 2048)
    assert model["data_classes"] == ["public", "internal", "confidential"]
    (backend,) = doc["backends"]
    assert backend["max_concurrency"] == 8 and backend["healthy"] is None  # not probed yet
    assert doc["prices"]["models"]["m"]["input_per_million"] == "0.5"


async def test_an_unchanged_catalogue_is_304(agent: InProcessAgent) -> None:
    async with agent.http() as http:
        etag = (await http.get("/catalogue")).headers["etag"]
        r = await http.get("/catalogue", headers={"if-none-match": etag})
        assert r.status_code == 304 and r.content == b""
        await _offer(agent, models=[{"name": "new"}])
        r = await http.get("/catalogue", headers={"if-none-match": etag})
        assert r.status_code == 200 and r.headers["etag"] != etag
        assert [m["name"] for m in r.json()["models"]] == ["new"]


async def test_a_long_poll_is_answered_by_the_change(agent: InProcessAgent) -> None:
    async with agent.http() as http:
        etag = (await http.get("/catalogue")).headers["etag"]
        poll = asyncio.create_task(
            http.get("/catalogue", params={"wait": "30"}, headers={"if-none-match": etag})
        )
        await asyncio.sleep(0)  # the poll is waiting; nothing has changed
        assert not poll.done()
        await _offer(agent, models=[{"name": "added"}])
        r = await asyncio.wait_for(poll, 20)
    assert r.status_code == 200
    assert [m["name"] for m in r.json()["models"]] == ["added"]


async def test_a_long_poll_without_change_ends_with_304(agent: InProcessAgent) -> None:
    async with agent.http() as http:
        etag = (await http.get("/catalogue")).headers["etag"]
        r = await http.get("/catalogue", params={"wait": "0.05"}, headers={"if-none-match": etag})
    assert r.status_code == 304


@pytest.mark.parametrize("wait", ["-1", "soon", "nan"])
async def test_a_bad_wait_is_400(agent: InProcessAgent, wait: str) -> None:
    async with agent.http() as http:
        r = await http.get("/catalogue", params={"wait": wait})
    assert r.status_code == 400 and r.json()["error"]["param"] == "wait"


async def test_health_verdicts_are_announced(agent_factory: AgentFactory, tmp_path: Path) -> None:
    from tests.fakes import FakeBackend

    cfg = parse_site_config(
        site_dict(
            tmp_path,
            backends=[{"name": "b1", "url": "http://b1.invalid:1", "models": ["m"]}],
            models=[{"name": "m"}],
        )
    )
    async with agent_factory(cfg) as agent:
        svc = agent.services
        fake = FakeBackend("b1")
        import httpx

        from verbund.agent._offer import Offer

        svc.offer = Offer(cfg, lambda b: httpx.MockTransport(fake))
        await svc.offer.prober.probe_all()
        svc.refresh_catalogue()
        async with agent.http() as http:
            assert (await http.get("/catalogue")).json()["backends"][0]["healthy"] is True
        fake.mode = "refuse"
        await svc.offer.prober.probe_all()
        svc.refresh_catalogue()
        async with agent.http() as http:
            assert (await http.get("/catalogue")).json()["backends"][0]["healthy"] is False
        await svc.offer.aclose()


async def test_a_reload_above_max_data_class_is_refused(
    agent_factory: AgentFactory, tmp_path: Path
) -> None:
    path = tmp_path / "site.toml"
    from harness.federation import write_toml
    from tests.agent.conftest import KEYS
    from verbund.agent import create_agent_app

    data = site_dict(tmp_path / "s", site={"name": "west", "max_data_class": "internal"})
    write_toml(data, path)
    app = create_agent_app(parse_site_config(data), env=KEYS, background=False, config_path=path)
    async with app.router.lifespan_context(app):
        svc = app.state.services
        data["models"] = [{"name": "secret", "data_classes": ["sensitive"]}]
        write_toml(data, path)
        with pytest.raises(ConfigError, match="max_data_class"):
            await svc.reload_file()
        assert svc.config.models == []  # the running offer stayed
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://agent",
            headers={"authorization": f"Bearer {OPERATOR_KEY}"},
        ) as http:
            r = await http.post("/site/reload")
            assert r.status_code == 400 and "sensitive" in r.json()["error"]["message"]
            data["models"] = [{"name": "fine", "data_classes": ["internal"]}]
            write_toml(data, path)
            r = await http.post("/site/reload")
            assert r.status_code == 200 and r.json()["models"] == ["fine"]
