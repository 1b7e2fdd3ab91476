"""The OpenAI SDK drives fine-tuning jobs against the access point (in-process)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from harness.training import blobs_csv, put_file
from tests.conftest import Gateway, GatewayFactory
from tests.jobs.helpers import SLOW, jobs_config, kill_leftovers
from verbund.config import FederationConfig


@pytest.fixture
def cfg(tmp_path: Path) -> FederationConfig:
    c = jobs_config(tmp_path)
    put_file(c, "uni-a", "file-blobs", blobs_csv())
    return c


@pytest.fixture
async def sdk(
    gateway_factory: GatewayFactory, cfg: FederationConfig
) -> AsyncIterator[tuple[openai.AsyncOpenAI, Gateway]]:
    try:
        async with gateway_factory(cfg) as gw:
            gw.services.jobs.recipes.register(SLOW)
            transport = gw.client._transport  # the in-process ASGI transport
            http = httpx.AsyncClient(transport=transport, base_url="http://ap/v1")
            client = openai.AsyncOpenAI(
                base_url="http://ap/v1", api_key=gw.keys["uni-a"], http_client=http, max_retries=0
            )
            yield client, gw
            await http.aclose()
    finally:
        kill_leftovers(cfg)


async def test_sdk_fine_tuning_round_trip(sdk: tuple[openai.AsyncOpenAI, Gateway]) -> None:
    client, gw = sdk
    job = await client.fine_tuning.jobs.create(
        model="centroid-classifier",
        training_file="file-blobs",
        suffix="sdk",
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        seed=7,
    )
    assert job.status == "validating_files" and job.seed == 7
    deadline = time.monotonic() + 60
    while job.status not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        await gw.tick()
        job = await client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded"
    assert job.fine_tuned_model == "ft:centroid-classifier:uni-a:sdk"
    assert job.hyperparameters.n_epochs == 2
    events = await client.fine_tuning.jobs.list_events(job.id, limit=50)
    assert events.data[0].message == "The job has successfully completed"
    assert any(e.type == "metrics" for e in events.data)
    listed = await client.fine_tuning.jobs.list(limit=5)
    assert [j.id for j in listed.data] == [job.id]
    models = [m.id for m in (await client.models.list()).data]
    assert job.fine_tuned_model in models

    slow = await client.fine_tuning.jobs.create(model="test-slow", training_file="file-blobs")
    cancelled = await client.fine_tuning.jobs.cancel(slow.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        await client.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.NotFoundError):
        await client.fine_tuning.jobs.retrieve("ftjob-nope")
