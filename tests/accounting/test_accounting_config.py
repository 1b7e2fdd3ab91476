"""Config for accounting: price lists, partner sites, budgets, retention; config digest."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import federation_dict
from verbund.config import config_digest, parse_config
from verbund.errors import ConfigError

TOML = """
[retention]
usage_days = 30

[[sites]]
name = "rz-west"
region = "NW"
  [sites.prices]
  currency = "EUR"
  gpu_hour = 2.0
  cpu_hour = 0.05
  [sites.prices.models."llama-3.3-70b"]
  input_per_million = 0.5
  output_per_million = 1.5
  per_inference = 0.0

[[models]]
name = "llama-3.3-70b"

[[institutions]]
id = "uni-a"
home_region = "NW"
budget_per_month = 250.0
budget_tokens_per_month = 1000000
budget_hard_stop = true
"""


def test_prices_budgets_and_retention_parse_from_toml() -> None:
    cfg = parse_config(tomllib.loads(TOML))
    prices = cfg.sites[0].prices
    assert prices is not None and prices.currency == "EUR"
    llama = prices.models["llama-3.3-70b"]
    assert llama.input_per_million == Decimal("0.5") and llama.output_per_million == Decimal("1.5")
    assert prices.gpu_hour == Decimal("2.0") and prices.cpu_hour == Decimal("0.05")
    inst = cfg.institutions[0]
    assert inst.budget_per_month == Decimal("250.0") and inst.budget_hard_stop
    assert cfg.partner_site(inst) == "rz-west"
    assert cfg.retention.usage_days == 30 and cfg.retention.availability_days == 90
    assert cfg.currency == "EUR"


def test_defaults_are_zero_and_optional(tmp_path: Path) -> None:
    cfg = parse_config(federation_dict(tmp_path))
    assert cfg.sites[0].prices is None
    inst = cfg.institutions[0]
    assert (inst.budget_per_month, inst.budget_tokens_per_month, inst.budget_hard_stop) == (
        0,
        0,
        False,
    )
    assert cfg.retention.usage_days == 400


def test_partner_site_defaults_to_the_only_site_of_the_home_region(tmp_path: Path) -> None:
    data = federation_dict(tmp_path)
    data["sites"][2]["region"] = "BY"  # now two sites in BY
    data["institutions"].append({"id": "uni-c", "home_region": "SN"})
    data["institutions"].append({"id": "uni-d", "home_region": "BY", "partner_site": "ost"})
    cfg = parse_config(data)
    partners = {i.id: cfg.partner_site(i) for i in cfg.institutions}
    assert partners == {"uni-a": "west", "uni-b": None, "uni-c": None, "uni-d": "ost"}


def test_bad_references_and_values_are_named(tmp_path: Path) -> None:
    data = federation_dict(tmp_path)
    data["sites"][0]["prices"] = {"currency": "EUR", "models": {"gpt-9": {}}}
    data["sites"][1]["prices"] = {"currency": "USD"}
    data["institutions"][0]["partner_site"] = "nowhere"
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    text = str(err.value)
    assert "unknown partner_site 'nowhere'" in text
    assert "site 'west' prices undeclared models: gpt-9" in text
    assert "one currency" in text and "EUR, USD" in text

    data = federation_dict(tmp_path)
    data["sites"][0]["prices"] = {"currency": "euro", "models": {"smol": {"per_inference": -1}}}
    data["institutions"][0]["budget_per_month"] = -5
    data["retention"] = {"usage_days": -1}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    paths = [p for p, _ in err.value.problems]
    assert "sites[0:west].prices.currency" in paths
    assert "sites[0:west].prices.models.smol.per_inference" in paths
    assert "institutions[0:uni-a].budget_per_month" in paths
    assert "retention.usage_days" in paths


def test_config_digest_ignores_the_per_access_point_gateway_table(tmp_path: Path) -> None:
    data = federation_dict(tmp_path)
    base = config_digest(parse_config(data))
    data["gateway"]["name"] = "ap-other"
    assert config_digest(parse_config(data)) == base
    data["institutions"][0]["tokens_per_month"] = 5
    assert config_digest(parse_config(data)) != base
