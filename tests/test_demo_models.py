"""The demo's MLServer set-up: settings, interpreter lookup, and the training script."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from verbund import demo_models
from verbund.demo import DemoError, framework_python


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
        framework_python("sklearn")
    cmd = demo_models.mlserver_command(fake, tmp_path)
    assert cmd == [str(fake), "-m", "mlserver.cli.main", "start", str(tmp_path)]


@pytest.mark.parametrize("name", sorted(demo_models.TRAINERS))
def test_trainer_script_runs_without_verbund(name: str) -> None:
    """The script must run in a venv without Verbund: it may import only the stdlib at the top."""
    script = demo_models.trainer_script(name)
    out = subprocess.run(
        ["python3", "-I", "-c", f"import runpy; runpy.run_path({str(script)!r}, run_name='x')"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_kserve_command_runs_the_framework_model_on_loopback_without_grpc(tmp_path: Path) -> None:
    python, model = tmp_path / "python", tmp_path / "model.onnx"
    cmd = demo_models.kserve_command(python, "onnx", model, "digits-onnx", 9100)
    assert cmd[:2] == [str(python), str(Path(demo_models.__file__).parent / "serve_kserve.py")]
    args = dict(zip(cmd[2::2], cmd[3::2], strict=True))
    assert args["--framework"] == "onnx" and args["--model_file"] == str(model)
    assert args["--model_name"] == "digits-onnx" and args["--http_port"] == "9100"
    assert args["--enable_grpc"] == "false" and args["--workers"] == "1"


def test_each_framework_has_its_own_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venvs = {e.venv for e in demo_models.ENVIRONMENTS.values()}
    assert len(venvs) == len(demo_models.ENVIRONMENTS) and ".venv" not in venvs
    fake = tmp_path / "python"
    fake.write_text("")
    monkeypatch.setenv(demo_models.ENVIRONMENTS["keras"].env_var, str(fake))
    assert demo_models.find_python("keras") == fake
    monkeypatch.setenv(demo_models.ENVIRONMENTS["onnx"].env_var, str(tmp_path / "missing"))
    assert demo_models.find_python("onnx") is None
    for trainer in demo_models.TRAINERS.values():
        assert trainer.environment in demo_models.ENVIRONMENTS
        assert set(trainer.files) <= set(demo_models.ENVIRONMENTS)
    # the ONNX file comes from the PyTorch training: one network, two runtimes
    assert demo_models.TRAINERS["digits-cnn"].files == {"pytorch": "model.pt", "onnx": "model.onnx"}
