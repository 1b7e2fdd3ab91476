"""The model catalogue (GET /v1/models): metadata, sites and their state, and policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MODEL, Gateway, GatewayFactory
from tests.gateway.test_oip_routes import DIGITS, fakes_for, oip_config
from verbund.config import SiteState


@pytest.fixture
async def og(gateway_factory: GatewayFactory, tmp_path: Path) -> AsyncIterator[Gateway]:
    cfg = oip_config(tmp_path)
    async with gateway_factory(cfg, fakes_for(cfg)) as g:
        yield g


async def catalogue(gw: Gateway, institution: str = "uni-a") -> dict[str, dict[str, Any]]:
    resp = await gw.client.get("/v1/models", headers=gw.auth(institution))
    assert resp.status_code == 200
    return {m["id"]: m for m in resp.json()["data"]}


async def test_entries_keep_openai_fields_and_add_metadata(og: Gateway) -> None:
    models = await catalogue(og)
    assert list(models) == [MODEL, "emb", DIGITS]  # config order
    d = models[DIGITS]
    assert (d["object"], d["owned_by"]) == ("model", "verbund")
    assert isinstance(d["created"], int)
    v = d["verbund"]
    assert (v["kind"], v["license"], v["owner_site"]) == ("oip", "CC-BY-4.0", None)
    assert v["modalities"] == ["tensor"]  # the default for an OIP model
    assert models[MODEL]["verbund"]["modalities"] == ["text"]
    assert models["emb"]["verbund"]["kind"] == "embedding"
    assert v["available"] is True
    assert [s["name"] for s in v["sites"]] == ["west", "sued"]
    west = v["sites"][0]
    assert west == {
        "name": "west",
        "region": "NW",
        "jurisdiction": "DE",
        "max_data_class": "sensitive",
        "state": "active",
        "backends": 1,
        "backends_available": 1,
        "available": True,
        "on_demand": None,
    }
    # uni-a sends internal data at least; west takes up to sensitive
    assert v["data_classes"] == ["internal", "confidential", "sensitive"]


async def test_unavailable_models_are_shown_not_hidden(og: Gateway) -> None:
    for name in ("west-oip", "sued-oip"):
        og.services.federation.backends[name].healthy = False
    d = (await catalogue(og))[DIGITS]["verbund"]
    assert d["available"] is False and d["status"] == "unavailable"
    assert [(s["backends_available"], s["available"]) for s in d["sites"]] == [(0, False)] * 2
    one = await og.client.get(f"/v1/models/{DIGITS}", headers=og.auth())
    assert one.status_code == 200 and one.json()["verbund"]["available"] is False


async def test_site_state_is_shown(og: Gateway) -> None:
    await og.services.lifecycle.set_state("west", SiteState.draining, "test")
    await og.services.lifecycle.set_state("sued", SiteState.maintenance, "test")
    d = (await catalogue(og))[DIGITS]["verbund"]
    assert [(s["state"], s["available"]) for s in d["sites"]] == [
        ("draining", False),
        ("maintenance", False),
    ]
    assert d["available"] is False


async def test_policy_hides_what_an_institution_may_not_use(og: Gateway) -> None:
    # uni-b: region BY only, public data: sued (confidential) is its only site
    d = (await catalogue(og, "uni-b"))[DIGITS]["verbund"]
    assert [s["name"] for s in d["sites"]] == ["sued"]
    assert d["data_classes"] == ["public", "internal", "confidential"]


async def test_model_at_no_compliant_site_is_hidden(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = oip_config(tmp_path, oip_sites=("west",))
    async with gateway_factory(cfg, fakes_for(cfg)) as g:
        assert DIGITS not in await catalogue(g, "uni-b")
        missing = await g.client.get(f"/v1/models/{DIGITS}", headers=g.auth("uni-b"))
        assert missing.status_code == 404
