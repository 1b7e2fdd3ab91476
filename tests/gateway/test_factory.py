"""The app factory behind `verbund gateway --workers N`: one spool slot per worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import federation as fed
from tests.conftest import make_config
from verbund.errors import ConfigError
from verbund.gateway._factory import CONFIG_ENV, app_from_env, claim_worker_slot, for_worker


def write_config(tmp_path: Path) -> Path:
    west = fed.site("west", "NW", [fed.backend("west-1", "http://127.0.0.1:9", ["smol"])])
    config = fed.federation("ap-x", tmp_path / "state", [west], models=["smol"])
    return fed.write_toml(config, tmp_path / "federation.toml")


def test_slots_are_exclusive_and_reused_after_release(tmp_path: Path) -> None:
    s0, fd0 = claim_worker_slot(tmp_path, "ap")
    s1, fd1 = claim_worker_slot(tmp_path, "ap")
    assert (s0, s1) == (0, 1)
    os.close(fd0)  # the worker holding slot 0 died
    s2, fd2 = claim_worker_slot(tmp_path, "ap")
    assert s2 == 0
    other, fd3 = claim_worker_slot(tmp_path, "other-ap")
    assert other == 0
    for fd in (fd1, fd2, fd3):
        os.close(fd)


def test_worker_config_differs_only_in_the_access_point_name(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    w = for_worker(cfg, 3)
    assert w.gateway.name == "ap-test.w3"
    assert w.gateway.listen == cfg.gateway.listen
    assert w.sites == cfg.sites and w.store == cfg.store


def test_factory_needs_the_config_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(ConfigError):
        app_from_env()


def test_each_worker_gets_its_own_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(write_config(tmp_path)))
    a, b = app_from_env(), app_from_env()
    try:
        assert (a.state.worker_slot, b.state.worker_slot) == (0, 1)
        names = {app.state.services.config.gateway.name for app in (a, b)}
        assert names == {"ap-x.w0", "ap-x.w1"}
        spools = sorted(p.name for p in (tmp_path / "state" / "usage-spool").iterdir())
        assert spools == ["ap-x.w0", "ap-x.w0.lock", "ap-x.w1", "ap-x.w1.lock"]
    finally:
        for app in (a, b):
            os.close(app.state.worker_lock_fd)
