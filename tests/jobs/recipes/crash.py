"""Test recipe: reports one step, then fails like a broken training script."""

import json
import sys
from pathlib import Path

job = Path(sys.argv[1])
with (job / "metrics.jsonl").open("a") as f:
    f.write(json.dumps({"step": 1, "total_steps": 3, "train_loss": 2.5}) + "\n")
print("Traceback (most recent call last): ...", file=sys.stderr)
print("RuntimeError: loss is NaN at step 2", file=sys.stderr)
sys.exit(3)
