"""Training the demo's models once and keeping them: beside the venv that trained them.

A model is trained again only when its training script or the interpreter changes, so
``verbund up`` starts warm, and the environment scripts can train at install time
(``python -m verbund.demo_models train NAME``) so that not even the first start waits.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from verbund.demo_models._mlserver import TRAINERS, trainer_script
from verbund.errors import VerbundError


class TrainingFailed(VerbundError):
    """A demo model could not be trained; the message names the log."""


def model_cache(python: Path, state_dir: Path) -> Path:
    """Where trained models are kept: beside the venv that trained them (so every state
    dir reuses them), or in the state dir when that venv is not writable."""
    venv = python.parent.parent
    if (venv / "pyvenv.cfg").exists() and os.access(venv, os.W_OK):
        return venv / "verbund-models"
    return state_dir / "models"


def train(name: str, python: Path, state_dir: Path, timeout: float = 600) -> Path:
    """The folder of the trained model ``name``: trained now unless it is there already."""
    trainer = TRAINERS[name]
    out = model_cache(python, state_dir) / name
    script = trainer_script(name)
    stamp = json.dumps(
        {"script_sha256": hashlib.sha256(script.read_bytes()).hexdigest(), "python": str(python)}
    )
    stamp_file = out / "trained-by.json"
    files = [out / f for f in trainer.files.values()]
    if all(f.exists() for f in files) and stamp_file.exists() and stamp_file.read_text() == stamp:
        return out
    out.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "logs" / f"train-{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [str(python), str(script), str(out)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        )
    if done.returncode != 0 or not all(f.exists() for f in files):
        raise TrainingFailed(f"Training the demo model {name!r} failed; see {log_path}.")
    tmp = stamp_file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(stamp)
    tmp.replace(stamp_file)
    return out
