"""Test recipe: ``steps`` steps of ``delay`` seconds, a metrics line each, then a tiny model.

Writes its own pid to ``recipe.pid`` so tests can kill it like a site would.
"""

import json
import os
import sys
import time
from pathlib import Path

job = Path(sys.argv[1])
params = json.loads((job / "params.json").read_text())
(job / "recipe.pid").write_text(str(os.getpid()))
steps, delay = int(params.get("steps", 5)), float(params.get("delay", 0.05))
for step in range(1, steps + 1):
    time.sleep(delay)  # stands for the work of one training step
    with (job / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": step, "total_steps": steps, "train_loss": 1.0 / step}) + "\n")
model = {
    "format": "verbund-linear-v1",
    "task": "classification",
    "n_features": 2,
    "classes": ["left", "right"],
    "coef": [[-1.0, 0.0], [1.0, 0.0]],
    "intercept": [0.0, 0.0],
    "mean": [0.0, 0.0],
    "scale": [1.0, 1.0],
    "info": {},
}
(job / "output" / "model.json").write_text(json.dumps(model))
(job / "output" / "summary.json").write_text(json.dumps({"hyperparameters": {"n_epochs": steps}}))
