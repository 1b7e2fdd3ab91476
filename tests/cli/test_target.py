"""Which access point a command talks to: option > environment > demo.json, once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import TARGET, Cli
from verbund.admin_client import AdminError
from verbund.cli._target import Target, TargetOptions, resolve

SITES: dict[str, list[object]] = {"sites": []}


def demo(state_dir: Path, url: str = "http://demo.test/", key: str = "vbadmin-demo") -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "demo.json").write_text(json.dumps({"url": url, "admin_key": key}))
    return state_dir


def test_option_beats_environment_beats_demo_json(tmp_path: Path) -> None:
    state = demo(tmp_path / "s")
    env = {"VERBUND_URL": "http://env.test", "VERBUND_ADMIN_KEY": "vbadmin-env"}
    both = TargetOptions(url="http://opt.test", admin_key="vbadmin-opt", state_dir=state)
    assert resolve(both, env) == Target("http://opt.test", "vbadmin-opt")
    assert resolve(TargetOptions(state_dir=state), env) == Target("http://env.test", "vbadmin-env")
    assert resolve(TargetOptions(state_dir=state), {}) == Target("http://demo.test", "vbadmin-demo")


def test_each_field_is_resolved_on_its_own(tmp_path: Path) -> None:
    state = demo(tmp_path / "s")
    got = resolve(TargetOptions(url="http://opt.test/", state_dir=state), {})
    assert got == Target("http://opt.test", "vbadmin-demo")
    got = resolve(TargetOptions(state_dir=state), {"VERBUND_ADMIN_KEY": "vbadmin-env"})
    assert got == Target("http://demo.test", "vbadmin-env")


def test_an_api_key_replaces_the_admin_key(tmp_path: Path) -> None:
    state = demo(tmp_path / "s")
    got = resolve(TargetOptions(api_key="sk-inst", state_dir=state), {"VERBUND_ADMIN_KEY": "a"})
    assert got == Target("http://demo.test", "sk-inst", institution=True)


def test_missing_target_names_the_options(tmp_path: Path) -> None:
    with pytest.raises(AdminError) as err:
        resolve(TargetOptions(url="http://opt.test", state_dir=tmp_path), {})
    for name in ("--url", "--admin-key", "VERBUND_URL", "VERBUND_ADMIN_KEY", "--state-dir"):
        assert name in str(err.value)
    with pytest.raises(AdminError, match="--url, set VERBUND_URL"):
        resolve(TargetOptions(api_key="sk-inst", state_dir=tmp_path), {})


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_broken_demo_json_is_named(tmp_path: Path, text: str) -> None:
    (tmp_path / "demo.json").write_text(text)
    with pytest.raises(AdminError, match=r"demo\.json is not valid JSON"):
        resolve(TargetOptions(state_dir=tmp_path), {})


def test_command_line_option_beats_environment(cli: Cli) -> None:
    cli.api.routes[("GET", "/admin/sites")] = SITES
    env = {"VERBUND_URL": "http://env.test", "VERBUND_ADMIN_KEY": "vbadmin-env"}
    assert cli("sites", *TARGET, env=env).exit_code == 0
    assert cli("sites", env=env).exit_code == 0
    assert cli.api.targets == [
        Target("http://ap.test", "vbadmin-test"),
        Target("http://env.test", "vbadmin-env"),
    ]


def test_command_line_state_dir_reads_demo_json(cli: Cli, tmp_path: Path) -> None:
    cli.api.routes[("GET", "/admin/sites")] = SITES
    state = demo(tmp_path / "elsewhere")
    assert cli("sites", "--state-dir", str(state)).exit_code == 0
    demo(tmp_path / ".verbund", url="http://default.test")  # the default state dir
    assert cli("sites").exit_code == 0
    assert [t.url for t in cli.api.targets] == ["http://demo.test", "http://default.test"]


def test_missing_target_exits_1_naming_the_options(cli: Cli) -> None:
    r = cli("keys", "list")
    assert r.exit_code == 1
    assert "Give --url and --admin-key, set VERBUND_URL" in r.stderr
    assert cli.api.calls == []


def test_resolved_once_per_invocation_and_closed(cli: Cli) -> None:
    pages = {0: [{"seq": 1}, {"seq": 2}], 2: [{"seq": 3}], 3: []}
    cli.api.routes[("GET", "/admin/audit")] = lambda kw: {"data": pages[kw["params"]["after"]]}
    r = cli("audit", "export", *TARGET)
    assert r.exit_code == 0, r.output
    assert len(cli.api.calls) == 3
    assert len(cli.api.targets) == 1
    assert cli.api.closed == 1


def test_the_api_key_comes_from_its_variable(cli: Cli) -> None:
    cli.api.routes[("GET", "/v1/training/jobs")] = {"data": []}
    r = cli("jobs", "list", "--url", "http://ap.test", env={"VERBUND_API_KEY": "sk-inst"})
    assert r.exit_code == 0, r.output
    assert cli.api.targets == [Target("http://ap.test", "sk-inst", institution=True)]


def test_local_commands_need_no_target(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / ".verbund").mkdir()
    (tmp_path / ".verbund" / "demo.json").write_text("{broken")  # would fail if resolved
    config = Path(__file__).parents[2] / "examples" / "demo.toml"
    r = cli("check", "--config", str(config))
    assert r.exit_code == 0, r.output
    assert ": OK - " in r.stdout
    assert cli.api.targets == []
