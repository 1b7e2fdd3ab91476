"""What it takes to run MLServer for one backend: its interpreter, settings and command."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
MLSERVER_PYTHON_ENV = "VERBUND_MLSERVER_PYTHON"


@dataclass(frozen=True, slots=True)
class Trainer:
    """A model the demo trains at start: its script and the tensors it takes and gives."""

    script: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]


TRAINERS = {
    "digits": Trainer(
        script="train_digits.py",
        inputs=[{"name": "images", "datatype": "FP64", "shape": [-1, 64]}],
        outputs=[{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}],
    ),
}


def trainer_script(name: str) -> Path:
    return _HERE / TRAINERS[name].script


def find_mlserver_python(configured: str = "") -> Path | None:
    """The MLServer venv's interpreter: configured, ``$VERBUND_MLSERVER_PYTHON``, or
    ``.venv-mlserver/`` in the source tree or the working directory."""
    explicit = configured or os.environ.get(MLSERVER_PYTHON_ENV, "")
    if explicit:
        return Path(explicit) if Path(explicit).exists() else None
    for root in (_HERE.parents[2], Path.cwd()):
        candidate = root / ".venv-mlserver" / "bin" / "python"
        if candidate.exists():
            return candidate
    return None


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
