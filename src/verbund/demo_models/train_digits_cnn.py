"""Train the demo's PyTorch model: a small convolutional network for 8x8 handwritten digits.

Runs in the PyTorch venv (``.venv-torch``, made by ``scripts/_torch_env.sh``) and imports
nothing from Verbund. Data: scikit-learn's bundled ``load_digits`` (no download); the first
``TRAIN_SAMPLES`` images train, the other 450 are held out (the same split as the
scikit-learn model, so the models compare). The network takes the raw pixel values 0..16
and scales them itself, so every client sends the data set's values as they are.

It writes two files of the same trained network: ``model.pt`` (TorchScript, served by the
PyTorch runtime) and ``model.onnx`` (exported for ONNX Runtime, which needs no torch), and
``meta.json`` with its held-out accuracy.

Usage: ``python train_digits_cnn.py OUT_DIR``.
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
    import torch  # type: ignore[import-not-found]
    from sklearn.datasets import load_digits
    from torch import nn

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    start = time.monotonic()
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1)  # [N, 1, 8, 8]
    y = torch.tensor(digits.target, dtype=torch.int64)
    x_train, y_train = x[:TRAIN_SAMPLES], y[:TRAIN_SAMPLES]
    x_test, y_test = x[TRAIN_SAMPLES:], y[TRAIN_SAMPLES:]

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
            )

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(images / 16.0))  # logits

    model = DigitsCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(TRAIN_SAMPLES, generator=gen).split(64):
            optimiser.zero_grad()
            loss_fn(model(x_train[idx]), y_train[idx]).backward()
            optimiser.step()
    model.eval()
    with torch.no_grad():
        torch_acc = float((model(x_test).argmax(1) == y_test).float().mean())
    train_seconds = time.monotonic() - start

    out.mkdir(parents=True, exist_ok=True)
    tag = f".{os.getpid()}.tmp"  # others may train into out at once
    scripted = torch.jit.trace(model, x_test[:2])
    scripted.save(str(out / f"model.pt{tag}"))
    onnx_tmp = out / f"model.onnx{tag}"
    torch.onnx.export(
        model,
        (x_test[:2],),
        str(onnx_tmp),
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}},
        dynamo=False,
    )
    import onnx

    onnx.checker.check_model(str(onnx_tmp))  # ONNX Runtime's accuracy is the tests' business
    (out / f"model.pt{tag}").replace(out / "model.pt")
    onnx_tmp.replace(out / "model.onnx")
    meta = {
        "model": "DigitsCNN: conv 3x3 16, conv 3x3 32, max-pool, dense 64, dense 10",
        "data_set": "sklearn.datasets.load_digits",
        "train_samples": TRAIN_SAMPLES,
        "holdout_samples": len(y) - TRAIN_SAMPLES,
        "holdout_accuracy": round(torch_acc, 4),
        "input": "FP32 [N, 1, 8, 8]: pixel values 0..16",
        "torch": torch.__version__,
        "train_seconds": round(train_seconds, 3),
    }
    (out / f"meta.json{tag}").write_text(json.dumps(meta, indent=2) + "\n")
    (out / f"meta.json{tag}").replace(out / "meta.json")
    print(json.dumps(meta))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
