"""Codex CLI (npm ``@openai/codex``) against the demo federation: ``codex exec`` with the
shipped ``examples/codex/config.toml`` (a custom model provider on the Responses wire
API, the key from ``VERBUND_API_KEY``) completes a turn and prints the model's answer."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from harness.demo import Demo
from harness.processes import ROOT
from tests.clients.conftest import CODEX, installed, run_client
from tests.clients.usage import usage_rows

pytestmark = pytest.mark.real
EXAMPLE = ROOT / "examples" / "codex"
DEFAULT_BASE_URL = 'base_url = "http://127.0.0.1:8080/v1"'


def codex_home(tmp_path: Path, demo: Demo) -> Path:
    """The example configuration, with only the port changed to the demo's."""
    home = tmp_path / "codex-home"
    home.mkdir()
    config = (EXAMPLE / "config.toml").read_text()
    assert config.count(DEFAULT_BASE_URL) == 1
    (home / "config.toml").write_text(
        config.replace(DEFAULT_BASE_URL, f'base_url = "{demo.url}/v1"')
    )
    shutil.copy(EXAMPLE / "instructions.md", home / "instructions.md")
    return home


@pytest.mark.timeout(600)  # the session's demo federation starts in this test's time
def test_codex_exec_completes_a_turn_through_the_responses_api(demo: Demo, tmp_path: Path) -> None:
    codex = installed(CODEX)
    work = tmp_path / "work"
    work.mkdir()
    answer = tmp_path / "answer.txt"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CODEX_HOME": str(codex_home(tmp_path, demo)),
        "VERBUND_API_KEY": demo.key("uni-a"),
    }
    since = time.time() - 1
    started = time.monotonic()
    done = run_client(
        [str(codex), "exec", "--skip-git-repo-check", "--ephemeral", "-o", str(answer),
         "Say hello in one short sentence."],
        env, timeout=280, cwd=work,
    )  # fmt: skip
    seconds = time.monotonic() - started
    out = done.stdout + done.stderr
    print(f"codex exec turn: {seconds:.1f} s\n{out[-3000:]}")
    assert done.returncode == 0, out[-3000:]
    # no protocol error, no retry ("Reconnecting... n/5"), no stream error
    assert "ERROR" not in out and "Reconnecting" not in out, out[-3000:]
    text = answer.read_text().strip()
    assert text and text in done.stdout  # the model's answer, printed
    assert not re.fullmatch(r"functions\.\S*:?", text)  # words, not a cut-off tool choice
    rows = usage_rows(demo, "institution,endpoint,status", since)
    mine = [r for r in rows if r["institution"] == "uni-a" and r["endpoint"] == "/v1/responses"]
    # accounted at the access point (its status may read "incomplete": Codex closes the
    # stream at response.completed, before the model server's own end of stream)
    assert mine and sum(r["requests"] for r in mine) >= 1, rows
