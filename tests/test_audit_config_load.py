"""Start-up records ``config.load`` in the audit log when the federation config changed."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import GatewayFactory, federation_dict
from verbund.config import config_digest, parse_config


async def actions(gateway_factory: GatewayFactory, data: dict[str, object]) -> list[str]:
    async with gateway_factory(parse_config(data)) as gw:
        entries = (await gw.client.get("/admin/audit", headers=gw.admin())).json()["data"]
        assert (await gw.client.get("/admin/audit/verify", headers=gw.admin())).json()["ok"]
        return [e["action"] for e in entries if e["action"] == "config.load"]


async def test_config_load_is_audited_when_the_config_changes(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    data = federation_dict(tmp_path)
    assert await actions(gateway_factory, data) == ["config.load"]
    assert await actions(gateway_factory, data) == ["config.load"]  # same config: no entry
    data["gateway"]["name"] = "ap-other"  # another access point of the same federation
    assert await actions(gateway_factory, data) == ["config.load"]
    data["institutions"][0]["budget_tokens_per_month"] = 1000
    assert await actions(gateway_factory, data) == ["config.load"] * 2

    async with gateway_factory(parse_config(data)) as gw:
        entries = (await gw.client.get("/admin/audit", headers=gw.admin())).json()["data"]
    loads = [e for e in entries if e["action"] == "config.load"]
    assert f'"{config_digest(parse_config(data))}"' in loads[-1]["after"]
    assert loads[-1]["before"] == loads[0]["after"]
    # the budget change reached the institution through the audited config sync, and
    # restarts with an unchanged config wrote no spurious updates
    updates = [e for e in entries if e["action"] == "institution.update"]
    assert len(updates) == 1 and '"budget_tokens_per_month":1000' in updates[0]["after"]


async def test_budget_and_partner_changes_via_the_admin_api_are_audited(
    gateway_factory: GatewayFactory,
) -> None:
    async with gateway_factory() as gw:
        r = await gw.client.patch(
            "/admin/institutions/uni-a",
            json={"budget_per_month": "120.50", "budget_hard_stop": True, "partner_site": "sued"},
            headers=gw.admin(),
        )
        assert r.status_code == 200, r.text
        assert r.json()["budget_per_month"] == "120.50" and r.json()["partner_site"] == "sued"
        bad = await gw.client.patch(
            "/admin/institutions/uni-a", json={"partner_site": "mars"}, headers=gw.admin()
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "partner_site"
        entries = (await gw.client.get("/admin/audit", headers=gw.admin())).json()["data"]
        last = entries[-1]
        assert last["action"] == "institution.update" and last["target"] == "uni-a"
        assert '"budget_per_month":"120.50"' in last["after"]
        # the registry reloads it from the store unchanged
        await gw.services.institutions.load()
        inst = gw.services.institutions.get("uni-a")
        assert inst is not None and str(inst.budget_per_month) == "120.50"
        assert inst.partner_site == "sued"
