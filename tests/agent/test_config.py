"""site.toml: the site, the agent, its credentials and the site's offer, with field paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agent.conftest import site_dict
from verbund.agent import load_site_config, parse_site_config
from verbund.errors import ConfigError


def test_defaults_put_the_store_under_the_state_dir(tmp_path: Path) -> None:
    cfg = parse_site_config(site_dict(tmp_path / "s"))
    assert cfg.agent.store == f"sqlite+aiosqlite:///{tmp_path / 's' / 'site.db'}"
    assert cfg.agent.host == "127.0.0.1" and cfg.agent.port == 9100


def test_backends_and_models_use_the_federation_models(tmp_path: Path) -> None:
    cfg = parse_site_config(
        site_dict(
            tmp_path,
            backends=[{"name": "b1", "url": "http://127.0.0.1:1/", "models": ["m"]}],
            models=[{"name": "m", "kind": "embedding", "license": "MIT"}],
            prices={"models": {"m": {"input_per_million": "0.5"}}},
        )
    )
    assert cfg.backends[0].url == "http://127.0.0.1:1"  # BackendConfig's own normalising
    assert cfg.model("m") is not None and cfg.model("m").license == "MIT"  # type: ignore[union-attr]


def test_errors_name_the_field(tmp_path: Path) -> None:
    data = site_dict(
        tmp_path,
        backends=[{"name": "b1", "url": "ftp://x", "models": ["m"]}],
        models=[{"name": "m"}],
    )
    data["agent"]["listen"] = "nowhere"
    with pytest.raises(ConfigError) as err:
        parse_site_config(data, "site.toml")
    paths = [p for p, _ in err.value.problems]
    assert "backends[0:b1].url" in paths
    assert "agent.listen" in paths


def test_a_model_above_the_site_max_data_class_is_refused(tmp_path: Path) -> None:
    data = site_dict(
        tmp_path,
        site={"max_data_class": "internal"},
        models=[{"name": "m", "data_classes": ["public", "confidential"]}],
    )
    with pytest.raises(ConfigError, match="confidential"):
        parse_site_config(data)


def test_a_backend_serving_an_undeclared_model_is_refused(tmp_path: Path) -> None:
    data = site_dict(tmp_path, backends=[{"name": "b", "url": "http://h:1", "models": ["x"]}])
    with pytest.raises(ConfigError, match="undeclared"):
        parse_site_config(data)


def test_mutual_tls_needs_the_agent_certificate(tmp_path: Path) -> None:
    data = site_dict(tmp_path, agent={"tls_client_ca": "/ca.pem"})
    with pytest.raises(ConfigError, match="tls_client_ca"):
        parse_site_config(data)


def test_load_reports_broken_toml(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[site\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_site_config(path)


def test_a_model_may_name_another_site_as_its_owner(tmp_path: Path) -> None:
    from tests.agent.conftest import KEYS
    from verbund.agent import AgentServices

    cfg = parse_site_config(
        site_dict(
            tmp_path,
            backends=[{"name": "b", "url": "http://h:1", "models": ["m"]}],
            models=[{"name": "m", "owner_site": "rz-elsewhere", "base_model": "elsewhere"}],
        )
    )
    svc = AgentServices.build(cfg, KEYS)  # the one-site federation of its probes accepts it
    assert "m" in svc.offer.federation.models
