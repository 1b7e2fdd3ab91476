"""Recipe ``sklearn-classifier``: a linear classifier (scikit-learn's SGDClassifier).

Standardises the features, then trains ``n_epochs`` passes of mini-batch SGD on the
logistic loss, reporting training and validation loss and accuracy after each pass.
Without a validation file, a fifth of the training rows (seeded) is held out. The model
is saved as ``output/model.json`` (weights as plain JSON, which the access point serves
without scikit-learn and without unpickling anything a site sent).

Parameters (``params.json``): ``n_epochs`` (default 10), ``batch_size`` (default 64),
``learning_rate_multiplier`` (scales eta0 = 0.01; default: scikit-learn's ``optimal``
schedule), ``alpha`` (L2 penalty, default 1e-4), ``label_column``, ``seed``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import tabular  # type: ignore[import-not-found]
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss


def _auto(value: Any, default: Any) -> Any:
    return default if value in (None, "auto") else value


def _sort_key(label: Any) -> tuple[str, Any]:
    return (type(label).__name__, label)


def main(job_dir: Path) -> None:
    params = json.loads((job_dir / "params.json").read_text())
    label_column = str(params.get("label_column", "label"))
    seed = int(params.get("seed", 0))
    n_epochs = int(_auto(params.get("n_epochs"), 10))
    batch_size = int(_auto(params.get("batch_size"), 64))
    lrm = _auto(params.get("learning_rate_multiplier"), None)
    alpha = float(params.get("alpha", 1e-4))

    xs, ys = tabular.read_table(job_dir / "input" / "training", label_column)
    classes = sorted(set(ys), key=_sort_key)
    index = {c: i for i, c in enumerate(classes)}
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray([index[v] for v in ys])
    rng = np.random.default_rng(seed)
    valid_path = job_dir / "input" / "validation"
    if valid_path.exists():
        vx_rows, vy_rows = tabular.read_table(valid_path, label_column)
        unknown = {v for v in vy_rows if v not in index}
        if unknown:
            raise ValueError(f"validation labels not in the training data: {sorted(unknown)}")
        vx = np.asarray(vx_rows, dtype=np.float64)
        vy = np.asarray([index[v] for v in vy_rows])
    else:
        order = rng.permutation(len(x))
        cut = max(1, len(x) // 5)
        vx, vy, x, y = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
    if vx.shape[1] != x.shape[1]:
        raise ValueError("training and validation files have different numbers of features")

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    xz, vz = (x - mean) / scale, (vx - mean) / scale
    kwargs: dict[str, Any] = {"loss": "log_loss", "alpha": alpha, "random_state": seed}
    if lrm is not None:
        kwargs.update(learning_rate="constant", eta0=0.01 * float(lrm))
    clf = SGDClassifier(**kwargs)
    labels = np.arange(len(classes))
    tabular.write_metrics(
        job_dir, message=f"training on {len(x)} rows, validating on {len(vx)}", level="info"
    )
    for epoch in range(1, n_epochs + 1):
        order = rng.permutation(len(xz))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            clf.partial_fit(xz[batch], y[batch], classes=labels)
        tabular.write_metrics(
            job_dir,
            step=epoch,
            total_steps=n_epochs,
            train_loss=float(log_loss(y, clf.predict_proba(xz), labels=labels)),
            train_accuracy=float(accuracy_score(y, clf.predict(xz))),
            valid_loss=float(log_loss(vy, clf.predict_proba(vz), labels=labels)),
            valid_accuracy=float(accuracy_score(vy, clf.predict(vz))),
        )

    coef = clf.coef_.tolist()
    intercept = clf.intercept_.tolist()
    if len(classes) == 2:  # one row for two classes: make it two, so argmax picks alike
        coef = [[-w for w in coef[0]], coef[0]]
        intercept = [-intercept[0], intercept[0]]
    valid_accuracy = float(accuracy_score(vy, clf.predict(vz)))
    tabular.write_linear_model(
        job_dir / "output",
        classes=classes,
        coef=coef,
        intercept=intercept,
        mean=mean.tolist(),
        scale=scale.tolist(),
        info={
            "recipe": "sklearn-classifier",
            "estimator": "SGDClassifier(log_loss)",
            "rows": len(x),
            "valid_accuracy": valid_accuracy,
        },
    )
    (job_dir / "output" / "summary.json").write_text(
        json.dumps(
            {
                "hyperparameters": {
                    "n_epochs": n_epochs,
                    "batch_size": batch_size,
                    "learning_rate_multiplier": lrm if lrm is not None else "auto",
                },
                "valid_accuracy": valid_accuracy,
            }
        )
    )


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]))
    except (ValueError, OSError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2)
