"""The ``[sites.runner]`` and ``[training]`` config tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import federation_dict
from verbund.config import parse_config
from verbund.demo import default_demo_config
from verbund.errors import ConfigError


def test_demo_sites_run_jobs_locally() -> None:
    cfg = parse_config(default_demo_config())
    runners = {s.name: s.runner.kind if s.runner else None for s in cfg.sites}
    assert runners == {"rz-west": "local", "rz-sued": None, "rz-ost": "local"}


def test_runner_defaults_and_errors(tmp_path: Path) -> None:
    data = federation_dict(tmp_path)
    data["sites"][0]["runner"] = {"kind": "slurm", "partition": "gpu", "gpus": 2}
    cfg = parse_config(data)
    runner = cfg.sites[0].runner
    assert runner is not None and runner.cpus == 1 and runner.workdir == ""
    assert cfg.training.poll_interval == 1.0
    data["sites"][1]["runner"] = {"kind": "k8s", "cpus": 0}
    data["training"] = {"poll_interval": 0}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    paths = {p for p, _ in err.value.problems}
    assert paths == {
        "sites[1:sued].runner.kind",
        "sites[1:sued].runner.cpus",
        "training.poll_interval",
    }
