from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import federation_dict
from verbund.config import DataClass, load_config, parse_config
from verbund.errors import ConfigError

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_valid_config_parses(tmp_path: Path) -> None:
    cfg = parse_config(federation_dict(tmp_path))
    assert [s.name for s in cfg.sites] == ["west", "sued", "ost"]
    assert cfg.site("ost") is not None
    assert cfg.site("ost").max_data_class is DataClass.internal  # type: ignore[union-attr]


def test_every_problem_is_reported_with_its_field_path(tmp_path: Path) -> None:
    data = federation_dict(tmp_path)
    data["sites"][1]["backends"][0]["url"] = "ftp://nope"
    data["sites"][2]["max_data_class"] = "secret"
    data["institutions"][0]["requests_per_minute"] = -1
    with pytest.raises(ConfigError) as err:
        parse_config(data, "fed.toml")
    paths = [p for p, _ in err.value.problems]
    assert "sites[1:sued].backends[0:sued-1].url" in paths
    assert "sites[2:ost].max_data_class" in paths
    assert "institutions[0:uni-a].requests_per_minute" in paths
    assert "fed.toml: " in str(err.value)


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    data = federation_dict(tmp_path)
    data["sites"][0]["api_key"] = "secret-in-file"
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert err.value.problems[0][0] == "sites[0:west].api_key"


def test_cross_references_are_checked(tmp_path: Path) -> None:
    data = federation_dict(tmp_path)
    data["sites"][0]["backends"][0]["models"] = ["not-declared"]
    data["gateway"]["home_site"] = "atlantis"
    data["sites"][2]["name"] = "west"
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    text = str(err.value)
    assert "undeclared models: not-declared" in text
    assert "home_site 'atlantis'" in text
    assert "duplicate site names: west" in text


def test_broken_toml_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text('[gateway]\nname = "x"\nlisten = \n')
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "line 3" in str(err.value)


@pytest.mark.parametrize("name", ["production.toml", "demo.toml"])
def test_examples_are_valid(name: str) -> None:
    cfg = load_config(EXAMPLES / name)
    assert cfg.sites


def test_production_example_serves_one_model_at_two_sites() -> None:
    cfg = load_config(EXAMPLES / "production.toml")
    regions = {s.region for s in cfg.sites}
    assert len(cfg.sites) == 3 and len(regions) == 3
    served_at: dict[str, set[str]] = {}
    for s in cfg.sites:
        for b in s.backends:
            for m in b.models:
                served_at.setdefault(m, set()).add(s.name)
    assert any(len(sites) >= 2 for sites in served_at.values())


def test_edge_bounds_are_checked_with_their_field_paths(tmp_path: Path) -> None:
    data = federation_dict(tmp_path)
    data["gateway"] = {
        **data.get("gateway", {}),
        "max_header_bytes": 10,
        "header_timeout": 0,
        "max_connections": -1,
        "drain_grace": -1,
    }
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    paths = {p for p, _ in err.value.problems}
    assert {
        "gateway.max_header_bytes",
        "gateway.header_timeout",
        "gateway.max_connections",
        "gateway.drain_grace",
    } <= paths
