"""Config for model diversity: catalogue fields and model servers the demo launches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import federation_dict
from verbund.config import parse_config
from verbund.demo import default_demo_config
from verbund.errors import ConfigError


def with_backend(tmp_path: Path, **backend: Any) -> dict[str, Any]:
    data = federation_dict(tmp_path)
    data["models"].append({"name": "digits", "kind": "oip"})
    data["sites"][0]["backends"].append(
        {"name": "west-oip", "url": "http://127.0.0.1:0", "models": ["digits"], **backend}
    )
    return data


def problems(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return str(err.value)


def test_catalogue_fields(tmp_path: Path) -> None:
    data = federation_dict(tmp_path)
    data["models"][0].update(license="Apache-2.0", owner_site="west", modalities=["text", "image"])
    cfg = parse_config(data)
    assert cfg.models[0].input_modalities == ["text", "image"]
    assert cfg.models[1].input_modalities == ["text"]
    data["models"][0]["owner_site"] = "mars"
    assert "unknown owner_site 'mars'" in problems(data)
    data["models"][0].update(owner_site="west", modalities=["Text!"])
    assert "models[0:smol].modalities[0]" in problems(data)


def test_mlserver_launch(tmp_path: Path) -> None:
    ok = parse_config(
        with_backend(tmp_path, kind="oip", launch={"kind": "mlserver", "train": "digits"})
    )
    launch = ok.sites[0].backends[1].launch
    assert launch is not None and launch.kind == "mlserver"
    no_model = with_backend(tmp_path, kind="oip", launch={"kind": "mlserver"})
    assert "needs model_file" in problems(no_model)
    wrong_kind = with_backend(tmp_path, launch={"kind": "mlserver", "train": "digits"})
    assert "launches MLServer but is not kind 'oip'" in problems(wrong_kind)
    unknown = with_backend(tmp_path, kind="oip", launch={"kind": "mlserver", "train": "cats"})
    assert "launch.train" in problems(unknown)


def test_llama_embedding_launch(tmp_path: Path) -> None:
    data = with_backend(
        tmp_path, launch={"embedding": True, "kv_overrides": ["llama.pooling_type=int:1"]}
    )
    launch = parse_config(data).sites[0].backends[1].launch
    assert launch is not None and launch.embedding and launch.kind == "llama-cpp"
    data["sites"][0]["backends"][1]["launch"]["kv_overrides"] = ["pooling; rm -rf"]
    assert "kv_overrides[0]" in problems(data)


def test_demo_serves_three_kinds_of_model() -> None:
    cfg = parse_config(default_demo_config())
    kinds = {m.name: m.kind for m in cfg.models}
    assert kinds == {"smollm2-135m": "chat", "smollm2-135m-embed": "embedding", "digits": "oip"}
    digit_sites = [s.name for s in cfg.sites for b in s.backends if "digits" in b.models]
    assert len(digit_sites) == 2  # failover needs two
    assert all(m.license and m.owner_site for m in cfg.models)
