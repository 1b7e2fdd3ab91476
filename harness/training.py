"""Training data and uploaded files for training-job runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

from verbund.config import FederationConfig


def put_file(
    cfg: FederationConfig,
    institution: str,
    file_id: str,
    text: str,
    data_class: str | None = None,
) -> None:
    """What the Files API does with an upload: store it for this institution."""
    folder = Path(cfg.gateway.state_dir) / "files" / institution
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file_id).write_text(text)
    if data_class is not None:
        (folder / f"{file_id}.json").write_text(json.dumps({"data_class": data_class}))


def blobs_csv(n: int = 90, seed: int = 1) -> str:
    """Three well separated classes in four features: any classifier gets them right."""
    rnd = random.Random(seed)
    centres = {0: (0.0, 0.0, 5.0, 5.0), 1: (8.0, 0.0, 0.0, 3.0), 2: (0.0, 9.0, 2.0, 0.0)}
    lines = ["f0,f1,f2,f3,label"]
    for i in range(n):
        label = i % 3
        values = [c + rnd.gauss(0, 0.5) for c in centres[label]]
        lines.append(",".join(f"{v:.3f}" for v in values) + f",{label}")
    return "\n".join(lines) + "\n"
