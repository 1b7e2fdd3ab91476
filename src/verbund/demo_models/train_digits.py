"""Train the demo's domain model: a classifier of 8x8 handwritten digits.

Runs in the MLServer venv (``.venv-mlserver``), whose scikit-learn must be the one that
loads the model again, so it imports nothing from Verbund. The data set is scikit-learn's
bundled ``load_digits`` (1,797 images, no download). The first ``TRAIN_SAMPLES`` images
train the model; the rest are held out, and the tests score the served model on them.

Usage: ``python train_digits.py OUT_DIR`` writes ``OUT_DIR/model.joblib`` and
``OUT_DIR/meta.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

TRAIN_SAMPLES = 1347  # the first 75 %, unshuffled: the held-out rest is a fixed test set


def main(out: Path) -> None:
    import joblib
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    start = time.monotonic()
    digits = load_digits()
    x, y = digits.data, digits.target  # 64 pixel values 0..16 per image
    model = SVC(gamma=0.001)  # scikit-learn's own example for this data set
    model.fit(x[:TRAIN_SAMPLES], y[:TRAIN_SAMPLES])
    holdout = float(model.score(x[TRAIN_SAMPLES:], y[TRAIN_SAMPLES:]))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"model.joblib.{os.getpid()}.tmp"  # others may train into out at once
    joblib.dump(model, tmp)
    tmp.replace(out / "model.joblib")
    meta = {
        "model": "sklearn.svm.SVC",
        "data_set": "sklearn.datasets.load_digits",
        "train_samples": TRAIN_SAMPLES,
        "holdout_samples": len(y) - TRAIN_SAMPLES,
        "holdout_accuracy": round(holdout, 4),
        "input": "FP64 [N, 64]: the 8x8 pixel values 0..16, row by row",
        "scikit_learn": sklearn.__version__,
        "train_seconds": round(time.monotonic() - start, 3),
    }
    tmp_meta = out / f"meta.json.{os.getpid()}.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
    tmp_meta.replace(out / "meta.json")
    print(json.dumps(meta))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
