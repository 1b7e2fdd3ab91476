"""Recipe ``centroid-classifier``: nearest class centroid, in plain Python.

Needs nothing but Python, so it runs at any site. Data are read in ``n_epochs`` chunks
(default 5); after each chunk the running centroids are scored on a held-out fifth of
the rows. Nearest-centroid is a linear rule (argmax of ``2 c.x - |c|^2``), so the result
is saved in the same ``output/model.json`` format as ``sklearn-classifier``.

Parameters: ``n_epochs`` (chunks), ``label_column``, ``seed``.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tabular  # type: ignore[import-not-found]


def _predict(centroids: dict[Any, list[float]], x: list[float]) -> Any:
    def dist(label: Any) -> float:
        return sum((a - b) ** 2 for a, b in zip(x, centroids[label], strict=True))

    return min(centroids, key=lambda c: (dist(c), repr(c)))


def _accuracy(centroids: dict[Any, list[float]], xs: list[list[float]], ys: list[Any]) -> float:
    hits = sum(1 for x, y in zip(xs, ys, strict=True) if _predict(centroids, x) == y)
    return hits / max(1, len(xs))


def main(job_dir: Path) -> None:
    params = json.loads((job_dir / "params.json").read_text())
    n_epochs = params.get("n_epochs")
    steps = 5 if n_epochs in (None, "auto") else max(1, int(n_epochs))
    xs, ys = tabular.read_table(
        job_dir / "input" / "training", str(params.get("label_column", "label"))
    )
    rows = list(zip(xs, ys, strict=True))
    random.Random(int(params.get("seed", 0))).shuffle(rows)
    cut = max(1, len(rows) // 5)
    held, train = rows[:cut], rows[cut:]
    hx, hy = [r[0] for r in held], [r[1] for r in held]
    width = len(xs[0])
    sums: dict[Any, list[float]] = {}
    counts: dict[Any, int] = {}
    chunk = max(1, -(-len(train) // steps))
    for step in range(1, steps + 1):
        for x, y in train[(step - 1) * chunk : step * chunk]:
            acc = sums.setdefault(y, [0.0] * width)
            for i, v in enumerate(x):
                acc[i] += v
            counts[y] = counts.get(y, 0) + 1
        centroids = {c: [v / counts[c] for v in s] for c, s in sums.items()}
        tabular.write_metrics(
            job_dir,
            step=step,
            total_steps=steps,
            train_accuracy=_accuracy(centroids, [r[0] for r in train], [r[1] for r in train]),
            valid_accuracy=_accuracy(centroids, hx, hy),
        )
    classes = sorted(centroids, key=lambda c: (type(c).__name__, c))
    tabular.write_linear_model(
        job_dir / "output",
        classes=classes,
        coef=[[2 * v for v in centroids[c]] for c in classes],
        intercept=[-sum(v * v for v in centroids[c]) for c in classes],
        mean=[0.0] * width,
        scale=[1.0] * width,
        info={"recipe": "centroid-classifier", "rows": len(train)},
    )
    (job_dir / "output" / "summary.json").write_text(
        json.dumps(
            {"hyperparameters": {"n_epochs": steps}, "valid_accuracy": _accuracy(centroids, hx, hy)}
        )
    )


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]))
    except (ValueError, OSError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2)
