"""Fine-tuning language models: the API's mapping to ``lora-sft``, the model card, the
institution-only catalogue entry, and where the adapter may be (fast, in-process).

The real run (training, llama.cpp serving, the habit learnt) is test_lora_real.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from harness.chat_data import chat_jsonl
from harness.training import put_file
from tests.batch.helpers import chat_line, create_batch, upload
from tests.conftest import MODEL, Gateway, GatewayFactory, federation_dict
from tests.jobs.helpers import jobs_config, kill_leftovers, wait_job
from verbund._llama import llama_server_command
from verbund.config import BackendConfig, FederationConfig, ModelConfig, parse_config
from verbund.federation import Federation
from verbund.jobs import FineTunedModel, LanguageModels, ModelRegistry, RecipeBook, model_card
from verbund.jobs._artefacts import adapter_of

FT = "ft:smol:uni-a:moin"


@pytest.fixture
def cfg(tmp_path: Path) -> FederationConfig:
    data = jobs_config(tmp_path).model_dump(mode="json")
    for site in data["sites"]:
        if site["name"] == "sued":  # only sued lists the language model
            site["runner"]["base_models"] = {"smol-base": "/srv/models/smol.gguf"}
    return FederationConfig.model_validate(data)


@pytest.fixture
async def jgw(gateway_factory: GatewayFactory, cfg: FederationConfig) -> AsyncIterator[Gateway]:
    put_file(cfg, "uni-a", "file-chat", chat_jsonl())
    try:
        async with gateway_factory(cfg) as g:
            yield g
    finally:
        kill_leftovers(cfg)


async def fine_tune(gw: Gateway, **body: Any) -> Any:
    return await gw.client.post(
        "/v1/fine_tuning/jobs", json={"training_file": "file-chat", **body}, headers=gw.auth()
    )


async def test_a_language_model_a_site_lists_is_fine_tuned_with_lora_there(jgw: Gateway) -> None:
    hyper = {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 5, "lora_rank": 4}
    r = await fine_tune(
        jgw,
        model="smol-base",
        suffix="moin",
        method={"type": "supervised", "supervised": {"hyperparameters": hyper}},
    )
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["verbund"]["recipe"] == "lora-sft"
    assert job["hyperparameters"] == hyper
    assert job["method"]["supervised"]["hyperparameters"]["lora_rank"] == 4
    assert job["fine_tuned_model"] is None and job["trained_tokens"] is None
    assert job["verbund"]["resources"]["gpus"] == 0  # what this CPU federation has
    row = await jgw.services.jobs.get(job["id"], "uni-a")
    assert row.params["base_model"] == "smol-base"
    placed = await wait_job(
        jgw, job["id"], ("running", "failed", "succeeded"), path="/v1/fine_tuning/jobs"
    )
    assert placed["verbund"]["site"] == "sued"  # the only site with the base model


async def test_lora_rank_is_for_language_models_only(jgw: Gateway) -> None:
    r = await fine_tune(jgw, model="centroid-classifier", hyperparameters={"lora_rank": 8})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "hyperparameters.lora_rank"


async def test_an_unlisted_model_names_the_fine_tunable_ones(jgw: Gateway) -> None:
    r = await fine_tune(jgw, model="llama-70b")
    assert r.status_code == 400
    assert "smol-base" in r.json()["error"]["message"]


def test_the_book_maps_site_models_to_the_chat_recipe() -> None:
    book = RecipeBook.builtin()
    assert book.for_base_model("smol", frozenset({"smol"})).name == "lora-sft"
    assert book.for_base_model("sklearn-classifier", frozenset({"smol"})).name != "lora-sft"


def _ft_model(adapter: str = "adapter/adapter.gguf") -> FineTunedModel:
    return FineTunedModel(
        name=FT,
        institution="uni-a",
        job_id="ftjob-0123456789abcdef",
        base=MODEL,
        recipe="lora-sft",
        path=Path("/nowhere"),
        created_at=time.time(),
        servable=False,
        site="west",
        adapter=adapter,
    )


def test_the_card_inherits_the_base_licence_and_names_it() -> None:
    base = ModelConfig(name=MODEL, license="Apache-2.0", context_length=2048, modalities=["text"])
    card = model_card(_ft_model(), base)
    assert (card.license, card.base_model, card.context_length) == ("Apache-2.0", MODEL, 2048)
    assert card.institutions == ["uni-a"] and card.owned_by == "uni-a"
    assert card.kind == "chat" and card.owner_site == "west"


@pytest.mark.parametrize(
    ("adapter", "kept"),
    [
        ("adapter/adapter.gguf", "adapter/adapter.gguf"),
        ("/etc/passwd.gguf", ""),
        ("../../other-job/adapter.gguf", ""),
        ("adapter/adapter_model.safetensors", ""),
        (7, ""),
    ],
)
def test_the_adapter_path_stays_inside_the_job_folder(adapter: object, kept: str) -> None:
    assert adapter_of({"artifact": "lora-adapter", "adapter": adapter}) == kept
    assert adapter_of({"artifact": "other", "adapter": "adapter/adapter.gguf"}) == ""


def test_the_server_loads_the_adapter_beside_the_unchanged_base() -> None:
    cmd = llama_server_command("py", Path("/b.gguf"), FT, 9, 1, 2048, lora=Path("/j/adapter.gguf"))
    assert cmd[cmd.index("--model") + 1] == "/b.gguf"
    assert cmd[cmd.index("--lora_path") + 1] == "/j/adapter.gguf"
    assert cmd[cmd.index("--model_alias") + 1] == FT
    assert cmd[cmd.index("--interrupt_requests") + 1] == "False"


class _Servers:
    """llama.cpp servers as the agent's LanguageModels sees them (no process)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, Path, Path]] = []
        self.urls: dict[str, str] = {}

    def url(self, name: str) -> str | None:
        return self.urls.get(name)

    async def serve(self, name: str, base: Path, adapter: Path) -> str:
        self.started.append((name, base, adapter))
        self.urls[name] = f"http://127.0.0.1:{9000 + len(self.started)}"
        return self.urls[name]

    async def aclose(self) -> None:
        self.urls.clear()


async def test_the_site_serves_its_fine_tuned_models_and_announces_them(tmp_path: Path) -> None:
    registry = ModelRegistry()
    registry.add(_ft_model())
    registry.add(replace(_ft_model(adapter=""), name="ft:smol:uni-a:clf"))  # nothing to serve
    llms = LanguageModels({MODEL: "/srv/base.gguf"}, tmp_path / "jobs", registry)
    servers = _Servers()
    llms.servers = servers  # type: ignore[assignment]
    assert await llms.sync() is True
    assert servers.started == [
        (FT, Path("/srv/base.gguf"), tmp_path / "jobs/ftjob-0123456789abcdef/adapter/adapter.gguf")
    ]
    assert await llms.sync() is False  # served: nothing changes, nothing started
    base = ModelConfig(name=MODEL, license="Apache-2.0")
    cards, backends = llms.offered({MODEL: base})
    assert [c.name for c in cards] == [FT] and cards[0].license == "Apache-2.0"
    assert backends[0].models == [FT] and backends[0].url == servers.urls[FT]
    servers.urls.clear()  # the server died: started again
    assert await llms.sync() is True and len(servers.started) == 2


async def test_an_announced_fine_tuned_model_is_routable_and_its_institutions_alone(
    tmp_path: Path,
) -> None:
    fed = Federation(parse_config(federation_dict(tmp_path)))
    card = model_card(_ft_model(), fed.models[MODEL], fed.models)
    bc = BackendConfig(name="west-ft-1", url="http://127.0.0.1:9", models=[FT])
    site = fed.sites["west"]
    added, removed = fed.apply_site("west", site.config, [card], [bc])
    assert [b.name for b in added] == ["west-ft-1"] and removed == []
    assert [b.name for b in fed.backends_for(FT)] == ["west-ft-1"]
    assert [s.name for s in fed.sites_for(FT)] == ["west"]
    assert fed.visible(FT, "uni-a") and not fed.visible(FT, "uni-b")
    assert fed.visible(MODEL, "uni-b")


@pytest.fixture
def reserved(tmp_path: Path) -> FederationConfig:
    data = federation_dict(tmp_path)
    data["models"].append(
        {"name": FT, "kind": "chat", "base_model": MODEL, "institutions": ["uni-a"]}
    )
    data["sites"][0]["backends"][0]["models"].append(FT)
    return parse_config(data)


async def test_a_reserved_model_is_its_institutions_alone(
    gateway_factory: GatewayFactory, reserved: FederationConfig
) -> None:
    async with gateway_factory(reserved) as gw:
        body = {"model": FT, "messages": [{"role": "user", "content": "Hallo"}]}
        mine = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth("uni-a"))
        assert mine.status_code == 200, mine.text
        listed = (await gw.client.get("/v1/models", headers=gw.auth("uni-a"))).json()["data"]
        entry = next(m for m in listed if m["id"] == FT)
        assert entry["verbund"]["base_model"] == MODEL
        other = await gw.client.post("/v1/chat/completions", json=body, headers=gw.auth("uni-b"))
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "model_not_found"
        listed = (await gw.client.get("/v1/models", headers=gw.auth("uni-b"))).json()["data"]
        assert FT not in [m["id"] for m in listed]
        got = await gw.client.get(f"/v1/models/{FT}", headers=gw.auth("uni-b"))
        assert got.status_code == 404
        assert json.loads(got.text)["error"]["type"]


async def test_another_institution_cannot_batch_against_a_reserved_model(
    gateway_factory: GatewayFactory, reserved: FederationConfig
) -> None:
    line = json.dumps(chat_line("1", model=FT)).encode()
    async with gateway_factory(reserved) as gw:
        statuses = {}
        for institution in ("uni-a", "uni-b"):
            f = await upload(gw, line, institution)
            batch = (await create_batch(gw, f.json()["id"], institution)).json()
            statuses[institution] = batch["status"]
        assert statuses["uni-a"] != "failed"
        assert statuses["uni-b"] == "failed"
        assert batch["errors"]["data"][0]["code"] == "model_not_found"
