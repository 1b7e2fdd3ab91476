"""Config for model diversity: catalogue fields and model servers the demo launches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import federation_dict
from verbund.config import inherited_license, parse_config
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
    assert kinds == {
        "smollm2-135m": "chat",
        "smollm2-135m-embed": "embedding",
        "digits": "oip",
        "digits-torch": "oip",
        "digits-onnx": "oip",
        "digits-keras": "oip",
    }
    digit_sites = [s.name for s in cfg.sites for b in s.backends if "digits" in b.models]
    assert len(digit_sites) == 2  # failover needs two
    assert all(m.license and m.owner_site for m in cfg.models)


def test_demo_runs_each_framework_on_kserve_from_its_own_environment() -> None:
    cfg = parse_config(default_demo_config())
    launches = {
        m: b.launch for s in cfg.sites for b in s.backends for m in b.models if b.launch is not None
    }
    frameworks = {m: (lc.kind, lc.framework, lc.train) for m, lc in launches.items()}
    assert frameworks["digits-torch"] == ("kserve", "pytorch", "digits-cnn")
    assert frameworks["digits-onnx"] == ("kserve", "onnx", "digits-cnn")  # the same network
    assert frameworks["digits-keras"] == ("kserve", "keras", "digits-keras")
    for name in ("digits-torch", "digits-onnx", "digits-keras"):
        model = cfg.model(name)
        assert model is not None and model.inputs and model.outputs and model.framework
        assert model.max_request_bytes > cfg.limits.max_body_bytes  # image batches as JSON
        assert model.card.training_data and model.card.intended_use and model.card.restrictions


def test_model_cards_licences_and_tensors(tmp_path: Path) -> None:
    base = {"name": "base", "kind": "chat", "license": "Apache-2.0"}
    tuned = {"name": "tuned", "kind": "chat", "base_model": "base"}
    cfg = parse_config({"models": [base, tuned]})
    models = {m.name: m for m in cfg.models}
    assert inherited_license(models["tuned"], models) == "Apache-2.0"  # from its base
    assert inherited_license(models["base"], models) == "Apache-2.0"
    assert "unknown base_model" in problems({"models": [tuned]})
    assert "license" in problems({"models": [{**base, "license": "Apache 2.0 or so"}]})
    assert parse_config({"models": [{**base, "license": "MIT OR Apache-2.0"}]})
    tensor = {"name": "x", "datatype": "FP32", "shape": [-1, 3]}
    assert "inputs" in problems({"models": [{**base, "inputs": [tensor]}]})  # oip only
    oip = {"name": "m", "kind": "oip", "inputs": [tensor, tensor]}
    assert "unique" in problems({"models": [oip]})
    assert "datatype" in problems({"models": [{**oip, "inputs": [{**tensor, "datatype": "F"}]}]})


def test_kserve_launch_needs_a_framework_that_fits_its_model(tmp_path: Path) -> None:
    ok = {"kind": "kserve", "framework": "onnx", "train": "digits-cnn"}
    assert parse_config(with_backend(tmp_path, launch=ok, kind="oip")).sites[0].backends[1].launch
    assert "framework" in problems(
        with_backend(tmp_path, launch={**ok, "framework": ""}, kind="oip")
    )
    wrong = {**ok, "framework": "keras"}
    assert "does not fit" in problems(with_backend(tmp_path, launch=wrong, kind="oip"))
    assert "launches KServe" in problems(with_backend(tmp_path, launch=ok, kind="openai"))
