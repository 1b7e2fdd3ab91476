"""``check`` and ``gateway`` run locally: a config problem, never a missing target."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import Cli


def test_check_lists_the_problems(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "fed.toml"
    bad.write_text('[gateway]\nlisten = "nowhere"\n[[sites]]\nname = 1\n')
    r = cli("check", "--config", str(bad))
    assert r.exit_code == 1
    assert "problem(s)" in r.stderr
    assert "Which access point" not in r.stderr


def test_gateway_with_a_missing_config_fails_on_the_config(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("verbund.server.stop_on_sigterm", lambda: None)  # keep pytest's handler
    r = cli("gateway", "--config", str(tmp_path / "missing.toml"))
    assert r.exit_code == 1
    assert "missing.toml" in r.stderr
    assert cli.api.targets == []


def test_verbund_check_refuses_an_oversized_spec(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "site.toml"
    f.write_text(
        '[site]\nname = "s"\n[[models]]\nname = "m"\n[capacity]\ncpus = 2\n'
        '[[on_demand]]\nmodel = "m"\ncpus = 16\n'
    )
    r = cli("check", "--config", str(f))
    assert r.exit_code == 1
    assert "on_demand[0:m].cpus: asks for 16, the site offers at most 2" in r.stderr
    f.write_text('[site]\nname = "s"\n[[models]]\nname = "m"\n[[on_demand]]\nmodel = "m"\n')
    r = cli("check", "--config", str(f))
    assert r.exit_code == 0 and "1 on demand" in r.stdout
