"""The demo's MLServer set-up: settings, interpreter lookup, and the training script."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from verbund import demo_models
from verbund.demo import DemoError, mlserver_python


def test_server_settings_keep_mlserver_on_loopback_without_extra_servers() -> None:
    s = demo_models.server_settings(9001, 9002)
    assert (s["host"], s["http_port"], s["grpc_port"]) == ("127.0.0.1", 9001, 9002)
    assert s["metrics_endpoint"] is None and s["parallel_workers"] == 0


def test_model_settings_describe_the_digits_tensors(tmp_path: Path) -> None:
    m = demo_models.model_settings("digits", tmp_path / "model.joblib", "digits")
    assert m["implementation"] == "mlserver_sklearn.SKLearnModel"
    assert m["parameters"]["uri"] == str(tmp_path / "model.joblib")
    assert m["inputs"] == [{"name": "images", "datatype": "FP64", "shape": [-1, 64]}]
    assert "inputs" not in demo_models.model_settings("mine", tmp_path / "m.joblib")
    json.dumps(m)  # it is written as JSON


def test_mlserver_python_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "python"
    fake.write_text("")
    assert demo_models.find_mlserver_python(str(fake)) == fake
    monkeypatch.setenv(demo_models.MLSERVER_PYTHON_ENV, str(fake))
    assert demo_models.find_mlserver_python() == fake
    monkeypatch.setenv(demo_models.MLSERVER_PYTHON_ENV, str(tmp_path / "missing"))
    with pytest.raises(DemoError, match=r"_mlserver_env\.sh"):
        mlserver_python()
    cmd = demo_models.mlserver_command(fake, tmp_path)
    assert cmd == [str(fake), "-m", "mlserver.cli.main", "start", str(tmp_path)]


def test_trainer_script_runs_without_verbund(tmp_path: Path) -> None:
    """The script must run in a venv without Verbund: it may import only the stdlib at the top."""
    script = demo_models.trainer_script("digits")
    out = subprocess.run(
        ["python3", "-I", "-c", f"import runpy; runpy.run_path({str(script)!r}, run_name='x')"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
