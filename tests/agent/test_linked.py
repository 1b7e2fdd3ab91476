"""An access point following an in-process agent's catalogue: changes applied while it
serves, health from the site, relayed inference, stale catalogues, site autonomy."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.agent.conftest import OPERATOR_KEY, SITE, LinkedFactory
from verbund.agent import parse_site_config
from verbund.errors import SiteAgentUnavailable


async def _served_by(linked: object, model: str = "smol") -> tuple[int, str]:
    r = await linked.gw.chat(model=model)  # type: ignore[attr-defined]
    return r.status_code, r.headers.get("x-verbund-site", "")


async def test_a_model_added_at_the_site_becomes_routable(linked_factory: LinkedFactory) -> None:
    async with linked_factory() as linked:
        gw = linked.gw
        assert (await gw.chat(model="new-model")).status_code == 404  # before the catalogue
        assert await linked.refresh()
        assert await _served_by(linked) == (200, SITE)  # west is the home site
        await linked.offer(["smol", "new-model"])
        assert await linked.refresh()
        assert await _served_by(linked, "new-model") == (200, SITE)
        models = (await gw.client.get("/v1/models", headers=gw.auth())).json()["data"]
        entry = next(m for m in models if m["id"] == "new-model")
        assert entry["verbund"]["license"] == "Apache-2.0"
        assert not await linked.refresh()  # nothing new: 304


async def test_a_model_removed_at_the_site_gets_no_more_requests(
    linked_factory: LinkedFactory,
) -> None:
    async with linked_factory(["smol", "gone"]) as linked:
        await linked.refresh()
        assert await _served_by(linked, "gone") == (200, SITE)
        calls = len(linked.fakes["west-a"].calls)
        await linked.offer(["smol"])
        await linked.refresh()
        r = await linked.gw.chat(model="gone")
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert len(linked.fakes["west-a"].calls) == calls
        # the model the config itself declares stays, served by the other site
        await linked.offer([])
        await linked.refresh()
        assert await _served_by(linked) == (200, "sued")


async def test_the_operators_allow_list_restricts_what_is_taken(
    linked_factory: LinkedFactory,
) -> None:
    async with linked_factory(["smol", "unvetted"], accept_models=["smol"]) as linked:
        await linked.refresh()
        assert (await linked.gw.chat(model="unvetted")).status_code == 404
        status = (await linked.gw.client.get("/status")).json()
        west = next(s for s in status["sites"] if s["name"] == SITE)
        assert any("unvetted" in r for r in west["catalogue"]["refused"])


async def test_the_access_point_may_trust_a_site_less_than_it_says(
    linked_factory: LinkedFactory,
) -> None:
    async with linked_factory(max_data_class="internal") as linked:
        await linked.offer(["smol"], max_data_class="sensitive")
        await linked.refresh()
        site = linked.gw.services.federation.sites[SITE]
        assert site.max_data_class.value == "internal"
        r = await linked.gw.chat(extra_headers=None) if False else None
        del r
        # a confidential request goes to sued (confidential), never to west
        resp = await linked.gw.client.post(
            "/v1/chat/completions",
            json={"model": "smol", "messages": [{"role": "user", "content": "x"}]},
            headers={**linked.gw.auth(), "x-verbund-data-class": "confidential"},
        )
        assert resp.status_code == 200 and resp.headers["x-verbund-site"] == "sued"


async def test_inference_through_the_agent(linked_factory: LinkedFactory) -> None:
    async with linked_factory(ingress="agent") as linked:
        await linked.refresh()
        backend = linked.gw.services.federation.backends["west-a"]
        assert backend.url == "http://agent/relay/west-a"
        assert await _served_by(linked) == (200, SITE)
        call = linked.fakes["west-a"].calls[-1]
        assert call["path"] == "/v1/chat/completions"
        assert "authorization" not in call["headers"]  # the agent's credential stays there
        r = await linked.gw.chat(stream=True)
        assert r.status_code == 200
        assert r.text.rstrip().endswith("data: [DONE]")
        assert '"t4 "' in r.text  # the last of the fake's tokens came through


async def test_a_backend_the_site_reports_down_gets_no_requests(
    linked_factory: LinkedFactory,
) -> None:
    async with linked_factory() as linked:
        svc = linked.agent.services
        await svc.offer.prober.probe_all()
        svc.refresh_catalogue()
        await linked.refresh()
        assert linked.gw.services.federation.backends["west-a"].healthy
        linked.fakes["west-a"].mode = "refuse"
        await svc.offer.prober.probe_all()
        svc.refresh_catalogue()
        await linked.refresh()
        backend = linked.gw.services.federation.backends["west-a"]
        assert backend.site_down and not backend.healthy
        probes = linked.fakes["west-a"].probes
        assert await _served_by(linked) == (200, "sued")
        assert linked.fakes["west-a"].probes == probes  # the access point did not probe it
        linked.fakes["west-a"].mode = "ok"
        await svc.offer.prober.probe_all()
        svc.refresh_catalogue()
        await linked.refresh()
        assert backend.healthy and not backend.site_down


async def test_a_backend_answering_here_is_not_taken_out_on_the_agents_word(
    linked_factory: LinkedFactory,
) -> None:
    async with linked_factory() as linked:
        svc = linked.agent.services
        await linked.refresh()
        assert await _served_by(linked) == (200, SITE)  # it answered this access point
        svc.offer.backends["west-a"].healthy = False  # the agent's probes time out (busy)
        svc.offer.backends["west-a"].probe_failures = 2
        svc.refresh_catalogue()
        await linked.refresh()
        backend = linked.gw.services.federation.backends["west-a"]
        assert backend.site_down and backend.healthy
        assert await _served_by(linked) == (200, SITE)


async def test_a_stale_catalogue_keeps_serving(linked_factory: LinkedFactory) -> None:
    async with linked_factory() as linked:
        await linked.refresh()
        sync = linked.sync
        real = sync.agents[SITE]._client._transport

        class Down:
            async def handle_async_request(self, request: object) -> object:
                import httpx

                raise httpx.ConnectError("down")

            async def aclose(self) -> None:
                return None

        sync.agents[SITE]._client._transport = Down()
        with pytest.raises(SiteAgentUnavailable):
            await linked.refresh()
        status = (await linked.gw.client.get("/status")).json()
        west = next(s for s in status["sites"] if s["name"] == SITE)
        assert west["catalogue"]["stale"] is True and west["models"] == ["smol"]
        assert await _served_by(linked) == (200, SITE)
        sync.agents[SITE]._client._transport = real
        await linked.offer(["smol", "later"])
        assert await linked.refresh()  # back: resynchronised
        status = (await linked.gw.client.get("/status")).json()
        west = next(s for s in status["sites"] if s["name"] == SITE)
        assert west["catalogue"]["stale"] is False and "later" in west["models"]


async def test_a_restarted_access_point_has_the_last_catalogue(
    linked_factory: LinkedFactory,
) -> None:
    async with linked_factory(["smol", "only-at-west"]) as linked:
        await linked.refresh()
        sync = linked.sync
        # another access point on the same store, whose agent has not answered yet
        from verbund.federation import CatalogueSync, Federation

        fed = Federation(linked.gw.services.config)
        fresh = CatalogueSync(fed, linked.gw.services.health.pool, sync._store, sync.agents)
        assert "only-at-west" not in fed.models
        await fresh.load()
        assert "only-at-west" in fed.models
        assert fresh.sites[SITE].source == "store" and fresh.sites[SITE].stale


async def test_the_sites_operator_drains_at_the_agent(linked_factory: LinkedFactory) -> None:
    async with linked_factory() as linked:
        await linked.refresh()
        async with linked.agent.http(OPERATOR_KEY) as op:
            r = await op.post(f"/sites/{SITE}/drain")
            assert r.status_code == 200 and r.json()["actor"] == "operator:op-west"
            assert (await op.post("/sites/sued/drain")).status_code == 403
        await linked.refresh()
        site = linked.gw.services.federation.sites[SITE]
        assert site.state.value == "draining" and site.own_state.value == "active"
        assert await _served_by(linked) == (200, "sued")
        async with linked.agent.http(OPERATOR_KEY) as op:
            assert (await op.post(f"/sites/{SITE}/resume")).status_code == 200
        await linked.refresh()
        assert await _served_by(linked) == (200, SITE)
        # the agent's audit chain names the actor
        from sqlalchemy import select

        from verbund.store import AuditRow

        async with linked.agent.services.store.session() as s:
            rows = (await s.scalars(select(AuditRow))).all()
        assert [(r.actor, r.action) for r in rows] == [
            ("operator:op-west", "site.draining"),
            ("operator:op-west", "site.active"),
        ]


async def test_the_admin_api_passes_lifecycle_changes_to_the_agent(
    linked_factory: LinkedFactory,
) -> None:
    async with linked_factory() as linked:
        gw = linked.gw
        r = await gw.client.post(f"/admin/sites/{SITE}/maintenance", headers=gw.admin())
        assert r.status_code == 200 and r.json()["agent"] == "applied"
        assert linked.agent.services.lifecycle.state.value == "maintenance"
        r = await gw.client.post(f"/admin/sites/{SITE}/resume", headers=gw.admin())
        assert linked.agent.services.lifecycle.state.value == "active"


async def test_forged_calls_change_nothing(linked_factory: LinkedFactory) -> None:
    async with linked_factory() as linked:
        for key in (None, "vbsite-op-sued-0123456789abcdef", "forged-credential-0123456789"):
            async with linked.agent.http(key) as http:
                assert (await http.post(f"/sites/{SITE}/maintenance")).status_code == 401
                assert (await http.post("/site/reload")).status_code == 401
                r = await http.post("/relay/west-a/v1/chat/completions", json={"model": "smol"})
                assert r.status_code == 401
        assert linked.agent.services.lifecycle.state.value == "active"
        assert linked.fakes["west-a"].calls == []


async def test_the_relay_is_for_access_points_and_inference_only(
    linked_factory: LinkedFactory,
) -> None:
    async with linked_factory(ingress="agent") as linked:
        async with linked.agent.http(OPERATOR_KEY) as op:
            r = await op.post("/relay/west-a/v1/chat/completions", json={"model": "smol"})
            assert r.status_code == 403
        async with linked.agent.http() as ap:
            assert (await ap.get("/relay/west-a/admin/secrets")).status_code == 404
            assert (await ap.get("/relay/nope/v1/models")).status_code == 404


async def test_a_site_operator_at_the_access_point_reaches_the_agent(
    linked_factory: LinkedFactory,
) -> None:
    """The access point's role model (a site_operator admin key scoped to one site) in
    front of an agent-run site: own site 2xx and passed to the agent, whose audit chain
    names the access point and the key; another site 403, and the agent unchanged."""
    async with linked_factory() as linked:
        gw = linked.gw
        r = await gw.client.post(
            "/admin/keys", json={"role": "site_operator", "site": SITE}, headers=gw.admin()
        )
        assert r.status_code == 201, r.text
        key_id, op = r.json()["id"], {"authorization": f"Bearer {r.json()['key']}"}
        r = await gw.client.post(f"/admin/sites/{SITE}/drain", headers=op)
        assert r.status_code == 200 and r.json()["agent"] == "applied"
        assert linked.agent.services.lifecycle.state.value == "draining"
        other = await gw.client.post("/admin/sites/sued/maintenance", headers=op)
        assert other.status_code == 403
        assert gw.services.federation.sites["sued"].state.value == "active"
        from sqlalchemy import select

        from verbund.store import AuditRow

        async with linked.agent.services.store.session() as s:
            (row,) = (await s.scalars(select(AuditRow))).all()
        assert row.actor == f"access_point:ap/{key_id} (site_operator)"
        assert row.action == "site.draining"


async def test_announced_prices_price_usage_and_survive_a_restart(
    linked_factory: LinkedFactory,
) -> None:
    import time

    from verbund.accounting import month_of
    from verbund.federation import CatalogueSync, Federation

    prices = {"currency": "EUR", "models": {"smol": {"per_inference": "0.50"}}}
    async with linked_factory() as linked:
        gw, svc = linked.gw, linked.agent.services
        data = svc.config.model_dump(mode="json", exclude_defaults=True)
        await svc.apply_config(parse_site_config({**data, "prices": prices}))
        await linked.refresh()
        for _ in range(3):
            assert await _served_by(linked) == (200, SITE)
        month = month_of(time.time())
        r = await gw.client.get(f"/admin/settlement?month={month}", headers=gw.admin())
        assert r.status_code == 200, r.text
        west = next(s for s in r.json()["sites"] if s["site"] == SITE)
        assert west["delivered"] == "1.50"  # three requests at the announced 0.50
        assert gw.services.accounting.budgets.spend("uni-a").cost == Decimal("1.50")
        # another access point on the same store, before the agent has answered it
        fed = Federation(gw.services.config)
        sync = linked.sync
        fresh = CatalogueSync(fed, gw.services.health.pool, sync._store, sync.agents)
        assert fed.sites[SITE].config.prices is None
        await fresh.load()
        restored = fed.sites[SITE].config.prices
        assert restored is not None and restored.models["smol"].per_inference == Decimal("0.50")


async def test_the_config_s_own_prices_win_over_announced_ones(
    linked_factory: LinkedFactory,
) -> None:
    own = {"currency": "EUR", "models": {"smol": {"per_inference": "0.10"}}}
    async with linked_factory(prices=own) as linked:
        gw, svc = linked.gw, linked.agent.services
        data = svc.config.model_dump(mode="json", exclude_defaults=True)
        announced = {"currency": "EUR", "models": {"smol": {"per_inference": "9.00"}}}
        await svc.apply_config(parse_site_config({**data, "prices": announced}))
        await linked.refresh()
        assert await _served_by(linked) == (200, SITE)
        await gw.services.accounting.spool.flush()
        assert gw.services.accounting.budgets.spend("uni-a").cost == Decimal("0.10")


async def test_routing_weighs_announced_backends_by_the_load_their_agent_reports(
    linked_factory: LinkedFactory,
) -> None:
    import time

    from verbund.federation import EngineLoad

    async with linked_factory() as linked:
        gw, svc = linked.gw, linked.agent.services
        data = svc.config.model_dump(mode="json", exclude_defaults=True)
        data["backends"] = [
            {"name": n, "url": f"http://{n}.invalid:8000", "models": ["smol"], "max_concurrency": 4}
            for n in ("west-a", "west-b")
        ]
        await svc.apply_config(parse_site_config(data))
        await linked.refresh()

        async def busy(name: str) -> None:
            """The agent's scrape: ``name``'s engine is full and has a queue."""
            now = time.monotonic()
            for b in svc.offer.backends.values():
                heavy = b.config.name == name
                b.engine = EngineLoad(4.0 if heavy else 0.0, 6.0 if heavy else 0.0, 0.2, now)
            await gw.services.health.scraper.scrape_all()  # the access point asks the agent

        await busy("west-a")
        here = gw.services.federation.backends["west-a"].engine
        assert (here.running, here.waiting) == (4.0, 6.0)
        for _ in range(4):
            await gw.chat(model="smol")
        assert len(linked.fakes["west-a"].calls) == 0 and len(linked.fakes["west-b"].calls) == 4
        await busy("west-b")
        for _ in range(4):
            await gw.chat(model="smol")
        assert len(linked.fakes["west-a"].calls) == 4 and len(linked.fakes["west-b"].calls) == 4
