"""Recipes that load a base model (lora-sft) load one the site lists, never a client's path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from harness.training import blobs_csv, put_file
from tests.conftest import Gateway, GatewayFactory
from tests.jobs.helpers import HERE, job_dir, jobs_config, kill_leftovers, wait_job
from verbund.config import FederationConfig
from verbund.jobs import DataFormat, Recipe, Resources

SITE_MODEL = Recipe(
    name="test-site-model",
    description="test: a recipe that loads a base model the site lists",
    script=HERE / "recipes" / "site_model.py",
    data=DataFormat.any,
    resources=Resources(cpus=1, memory_mb=64, time_limit_minutes=5),
    site_model=True,
)


@pytest.fixture
def cfg(tmp_path: Path) -> FederationConfig:
    base = jobs_config(tmp_path)
    data = base.model_dump(mode="json")
    for site in data["sites"]:
        if site["name"] == "sued":  # only sued has the model
            site["runner"]["base_models"] = {"llama-8b": "/srv/models/llama-3.1-8b"}
    return FederationConfig.model_validate(data)


@pytest.fixture
async def jgw(gateway_factory: GatewayFactory, cfg: FederationConfig) -> AsyncIterator[Gateway]:
    put_file(cfg, "uni-a", "file-blobs", blobs_csv())
    try:
        async with gateway_factory(cfg) as g:
            g.services.jobs.recipes.register(SITE_MODEL)
            yield g
    finally:
        kill_leftovers(cfg)


async def post(gw: Gateway, recipe: str, params: dict[str, Any]) -> Any:
    body = {"recipe": recipe, "training_file": "file-blobs", "params": params}
    return await gw.client.post("/v1/training/jobs", json=body, headers=gw.auth())


@pytest.mark.parametrize("recipe", ["lora-sft", "test-site-model"])
@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"base_model_path": "/home/other-institution/weights"}, "params.base_model_path"),
        ({"base_model": "llama-8b", "base_model_path": "/etc"}, "params.base_model_path"),
        ({"base_model": "../../etc"}, "params.base_model"),
        ({}, "params.base_model"),
    ],
)
async def test_a_client_path_or_an_unlisted_model_is_400(
    jgw: Gateway, recipe: str, params: dict[str, Any], param: str
) -> None:
    r = await post(jgw, recipe, params)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert "llama-8b" in err["message"] or "base_model_path" in err["message"]
    assert await jgw.services.jobs.list_jobs(None) == ([], False)


async def test_the_job_goes_where_its_model_is_and_gets_the_sites_folder(
    jgw: Gateway, cfg: FederationConfig
) -> None:
    r = await post(jgw, "test-site-model", {"base_model": "llama-8b"})
    assert r.status_code == 200, r.text
    done = await wait_job(jgw, r.json()["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded", done["error"]
    assert done["site"] == "sued"  # west is the home site, but does not list the model
    out = job_dir(cfg, "sued", done["id"]) / "output" / "params.json"
    got = json.loads(out.read_text())
    assert got["base_model"] == "llama-8b"
    assert got["base_model_path"] == "/srv/models/llama-3.1-8b"
