"""What it takes to run MLServer for one backend: its interpreter, settings and command."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verbund.demo_models._environments import ENVIRONMENTS, find_python
from verbund.demo_models._environments import HERE as _HERE

MLSERVER_PYTHON_ENV = ENVIRONMENTS["sklearn"].env_var


@dataclass(frozen=True, slots=True)
class Trainer:
    """A model the demo trains: its script, the environment that runs it (``sklearn``,
    ``pytorch``, ``keras``), the file it writes for each runtime that serves it, and the
    tensors MLServer is told about (KServe's runtime describes its own)."""

    script: str
    environment: str
    files: dict[str, str]
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)


TRAINERS = {
    "digits": Trainer(
        script="train_digits.py",
        environment="sklearn",
        files={"sklearn": "model.joblib"},
        inputs=[{"name": "images", "datatype": "FP64", "shape": [-1, 64]}],
        outputs=[{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}],
    ),
    # one network, trained once with PyTorch: TorchScript and its ONNX export
    "digits-cnn": Trainer(
        script="train_digits_cnn.py",
        environment="pytorch",
        files={"pytorch": "model.pt", "onnx": "model.onnx"},
    ),
    "digits-keras": Trainer(
        script="train_digits_keras.py", environment="keras", files={"keras": "model.keras"}
    ),
}


def trainer_script(name: str) -> Path:
    return _HERE / TRAINERS[name].script


def find_mlserver_python(configured: str = "") -> Path | None:
    """The MLServer venv's interpreter: configured, ``$VERBUND_MLSERVER_PYTHON``, or
    ``.venv-mlserver/`` in the source tree or the working directory."""
    return find_python("sklearn", configured)


def server_settings(http_port: int, grpc_port: int) -> dict[str, Any]:
    """MLServer's settings.json: loopback only, no metrics server, inference in-process."""
    return {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_endpoint": None,
        "parallel_workers": 0,
        "load_models_at_startup": True,
    }


def model_settings(name: str, model_file: Path, trainer: str = "") -> dict[str, Any]:
    """A model-settings.json for MLServer's scikit-learn runtime."""
    settings: dict[str, Any] = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model_file), "version": "v1"},
    }
    if trainer:
        settings["inputs"] = TRAINERS[trainer].inputs
        settings["outputs"] = TRAINERS[trainer].outputs
    return settings


def mlserver_command(python: Path, folder: Path) -> list[str]:
    return [str(python), "-m", "mlserver.cli.main", "start", str(folder)]
