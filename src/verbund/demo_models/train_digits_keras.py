"""Train the demo's TensorFlow/Keras model: a small convolutional network for 8x8 digits.

Runs in the TensorFlow venv (``.venv-tf``, made by ``scripts/_tf_env.sh``) and imports
nothing from Verbund. Data and split as in ``train_digits_cnn.py`` (scikit-learn's bundled
``load_digits``, the first 1,347 images train, 450 held out); Keras's own layout, images
last-channel ``[N, 8, 8, 1]``, raw pixel values 0..16 (a ``Rescaling`` layer scales them).

Usage: ``python train_digits_keras.py OUT_DIR`` writes ``model.keras`` and ``meta.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

TRAIN_SAMPLES = 1347
EPOCHS = 40
SEED = 1


def main(out: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(SEED)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    start = time.monotonic()
    digits = load_digits()
    x = digits.images.astype("float32")[..., None]  # [N, 8, 8, 1]
    y = digits.target.astype("int64")
    model = keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1), name="images"),
            keras.layers.Rescaling(1.0 / 16.0),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x[:TRAIN_SAMPLES], y[:TRAIN_SAMPLES], epochs=EPOCHS, batch_size=64, verbose=0)
    _, holdout = model.evaluate(x[TRAIN_SAMPLES:], y[TRAIN_SAMPLES:], verbose=0)
    out.mkdir(parents=True, exist_ok=True)
    tag = f".{os.getpid()}.tmp"  # others may train into out at once
    tmp = out / f"model{tag}.keras"  # Keras wants the suffix
    model.save(tmp)
    tmp.replace(out / "model.keras")
    meta = {
        "model": "Keras Sequential: conv 3x3 16, conv 3x3 32, max-pool, dense 64, dense 10",
        "data_set": "sklearn.datasets.load_digits",
        "train_samples": TRAIN_SAMPLES,
        "holdout_samples": len(y) - TRAIN_SAMPLES,
        "holdout_accuracy": round(float(holdout), 4),
        "input": "FP32 [N, 8, 8, 1]: pixel values 0..16",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "train_seconds": round(time.monotonic() - start, 3),
    }
    (out / f"meta.json{tag}").write_text(json.dumps(meta, indent=2) + "\n")
    (out / f"meta.json{tag}").replace(out / "meta.json")
    print(json.dumps(meta))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
