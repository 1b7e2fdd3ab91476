"""One running demo federation (``verbund up``: llama.cpp with SmolLM2, the embedding
model, an access point) shared by the client tests of this folder, and where the scripts
put the clients (scripts/_clients_env.sh, scripts/_openwebui_env.sh)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import openwebui
from harness.demo import Demo, start_demo
from harness.processes import ROOT

MODEL = "smollm2-135m"
EMBEDDING_MODEL = "smollm2-135m-embed"
CODEX = ROOT / ".clients" / "codex" / "node_modules" / ".bin" / "codex"
CLIENTS_PYTHON = ROOT / ".venv-clients" / "bin" / "python"
OPENWEBUI_VENV = openwebui.VENV


def installed(path: Path) -> Path:
    """``path``, or a failure that names the script which installs it (never a skip: the
    scripts install every client the tests use)."""
    if not path.exists():
        pytest.fail(f"{path} is missing: scripts/_clients_env.sh installs it")
    return path


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    d = start_demo(tmp_path_factory.mktemp("clients") / "state")
    yield d
    d.stop()


def run_client(
    argv: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a client to its end (bounded by ``timeout``), its output captured as text."""
    return subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
