"""The scripts install every package the tests use, so no test skips on a new machine."""

from __future__ import annotations

import ast
import subprocess
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_services_env_installs_every_tool_the_real_tests_need(tmp_path: Path) -> None:
    """On a machine without the tools, ``scripts/test``'s installer asks apt for all of
    them: PostgreSQL and Redis, and iproute2 and nftables of the network-partition test."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "apt-get.log"
    (bin_dir / "apt-get").write_text(f'#!/bin/bash\necho "$@" >> {asked}\n')
    (bin_dir / "service").write_text("#!/bin/bash\nexit 0\n")
    for stub in ("apt-get", "service"):
        (bin_dir / stub).chmod(0o755)
    script = ROOT / "scripts" / "_services_env.sh"
    # no ip, tc, nft or redis-server on this PATH; `ls` of PostgreSQL's path finds nothing
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    subprocess.run(
        ["/bin/bash", "-c", f'ls() {{ return 1; }}; source "{script}"'],
        env=env,
        check=True,
        timeout=30,
    )
    installs = [line.split() for line in asked.read_text().splitlines() if "install" in line]
    assert installs, "apt-get install was not called"
    packages = {word for line in installs for word in line if not word.startswith("-")}
    assert {"postgresql", "redis-server", "iproute2", "nftables"} <= packages


def _importorskipped(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "importorskip"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value).split(".")[0])
    return names


def test_modules_tests_import_or_skip_come_with_the_dev_extra() -> None:
    """A module a test skips without must be installed with the test dependencies, so
    that the skip never happens where ``scripts/test`` ran (whatever extras were chosen)."""
    modules: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        modules |= _importorskipped(ast.parse(path.read_text(), str(path)))
    assert modules, "no importorskip found: this test looks in the wrong place"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = " ".join(project["optional-dependencies"]["dev"]).lower().replace("_", "-")
    dists = packages_distributions()
    missing = []
    for module in sorted(modules):
        names = [d.lower().replace("_", "-") for d in dists.get(module, [module])]
        # numpy arrives with scikit-learn; a module is covered by a dev package or one
        # that depends on it
        if not any(n in dev for n in names) and not _required_by_dev(names, dev):
            missing.append(module)
    assert not missing, f"tests skip without {missing}, which the dev extra does not install"


def _required_by_dev(names: list[str], dev: str) -> bool:
    from importlib.metadata import PackageNotFoundError, requires

    for req in dev.split():
        dist = req.split(">")[0].split("=")[0].split("[")[0].strip('",')
        try:
            reqs = requires(dist) or []
        except PackageNotFoundError:
            continue
        deps = {
            r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in reqs
        }
        if any(n in deps for n in names):
            return True
    return False
