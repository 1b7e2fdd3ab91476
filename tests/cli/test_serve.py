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
