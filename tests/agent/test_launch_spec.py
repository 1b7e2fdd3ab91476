"""[[on_demand]] in site.toml: a spec is checked against the model list and [capacity]."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agent.conftest import site_dict
from verbund.agent import parse_site_config
from verbund.errors import ConfigError

MODEL = [{"name": "m", "kind": "chat"}]


def test_an_on_demand_spec_within_the_capacity_is_taken(tmp_path: Path) -> None:
    cfg = parse_site_config(
        site_dict(
            tmp_path,
            models=MODEL,
            capacity={"cpus": 4, "memory_mb": 8000, "gpus": 2, "gpu_types": ["a100"]},
            on_demand=[{"model": "m", "launcher": "slurm", "gpus": 1, "gpu_type": "a100"}],
        )
    )
    spec = cfg.launch_spec("m")
    assert spec is not None and spec.min_instances == 0 and spec.engine == "llama-cpp"


def test_a_spec_asking_for_more_than_the_site_offers_is_refused_with_its_path(
    tmp_path: Path,
) -> None:
    data = site_dict(
        tmp_path,
        models=MODEL,
        capacity={"cpus": 2, "memory_mb": 4000, "gpus": 1, "gpu_types": ["a100"]},
        on_demand=[
            {"model": "m", "cpus": 8, "memory_mb": 64000, "gpus": 4, "gpu_type": "h100"},
            {"model": "ghost"},
        ],
    )
    with pytest.raises(ConfigError) as err:
        parse_site_config(data)
    paths = dict(err.value.problems)
    assert paths["on_demand[0:m].cpus"] == "asks for 8, the site offers at most 2"
    assert "on_demand[0:m].memory_mb" in paths and "on_demand[0:m].gpus" in paths
    assert "on_demand[0:m].gpu_type" in paths
    assert paths["on_demand[1:ghost].model"] == "not declared under [[models]]"


def test_bad_bounds_are_refused(tmp_path: Path) -> None:
    data = site_dict(
        tmp_path, models=MODEL, on_demand=[{"model": "m", "min_instances": 3, "max_instances": 1}]
    )
    with pytest.raises(ConfigError) as err:
        parse_site_config(data)
    assert "min_instances" in str(err.value.problems)
