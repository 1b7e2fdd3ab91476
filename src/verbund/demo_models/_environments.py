"""Where each model server's framework, and the training runner's recipes, live: one
virtual environment each.

Frameworks never enter Verbund's own install (they pin other versions of FastAPI,
Starlette, protobuf or numpy, and weigh gigabytes); each has its own venv, made by an
idempotent script in ``scripts/``, and the demo (and the tests) find its interpreter here.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Environment:
    venv: str  # folder name in the source tree or the working directory
    env_var: str  # names an interpreter instead
    script: str  # makes the venv


ENVIRONMENTS = {
    "sklearn": Environment(".venv-mlserver", "VERBUND_MLSERVER_PYTHON", "scripts/_mlserver_env.sh"),
    "pytorch": Environment(".venv-torch", "VERBUND_TORCH_PYTHON", "scripts/_torch_env.sh"),
    "onnx": Environment(".venv-onnx", "VERBUND_ONNX_PYTHON", "scripts/_onnx_env.sh"),
    "keras": Environment(".venv-tf", "VERBUND_TF_PYTHON", "scripts/_tf_env.sh"),
    "training": Environment(
        ".venv-training", "VERBUND_TRAINING_PYTHON", "scripts/_training_env.sh"
    ),
}


def find_python(environment: str, configured: str = "") -> Path | None:
    """The environment's interpreter: ``configured``, its ``$VERBUND_*_PYTHON``, or its
    venv in the source tree, beside the running venv or in the working directory; None
    when there is none."""
    env = ENVIRONMENTS[environment]
    explicit = configured or os.environ.get(env.env_var, "")
    if explicit:
        return Path(explicit) if Path(explicit).exists() else None
    for root in (HERE.parents[2], Path(sys.prefix).parent, Path.cwd()):
        candidate = root / env.venv / "bin" / "python"
        if candidate.exists():
            return candidate
    return None
