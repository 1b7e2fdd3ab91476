"""An agent's report of its backends' engine load, and how an access point takes it in."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import federation_dict
from verbund.config import BackendConfig, ModelConfig, parse_config
from verbund.federation import EngineLoad, Federation, apply_load_report, load_report


def test_a_report_carries_each_read_backends_load_and_age(tmp_path: Path) -> None:
    fed = Federation(parse_config(federation_dict(tmp_path)))
    west = fed.backends["west-1"]
    west.engine = EngineLoad(3.0, 2.0, 0.5, scraped_at=100.0)
    report = load_report(fed.backends.values(), now=100.25)
    assert report == {
        "backends": {
            "west-1": {"running": 3.0, "waiting": 2.0, "cache_usage": 0.5, "age_seconds": 0.25}
        }
    }  # backends never read are left out


def test_the_access_point_takes_a_report_into_announced_backends_only(tmp_path: Path) -> None:
    fed = Federation(parse_config(federation_dict(tmp_path)))
    site = fed.sites["west"]
    announced = [
        BackendConfig(name=n, url=f"http://{n}:1", models=["smol"]) for n in ("wa", "wb", "wc")
    ]
    fed.apply_site("west", site.config, [ModelConfig(name="smol")], announced)
    entry = {"running": 4, "waiting": 1, "cache_usage": 2.0, "age_seconds": 0.5}
    report = {
        "backends": {
            "wa": entry,
            "wb": {**entry, "running": "many"},  # not a number: ignored
            "wc": {**entry, "waiting": -1},  # negative: ignored
            "west-1": entry,  # the config's own backend: this access point scrapes it
        }
    }
    assert apply_load_report(site, report, now=50.0) == 1
    wa = fed.backends["wa"].engine
    assert (wa.running, wa.waiting, wa.cache_usage, wa.scraped_at) == (4.0, 1.0, 1.0, 49.5)
    assert fed.backends["wb"].engine.scraped_at < 0 and fed.backends["wc"].engine.scraped_at < 0
    assert fed.backends["west-1"].engine.scraped_at < 0
    assert apply_load_report(site, {"backends": []}, now=50.0) == 0
