"""The demo's digit images for tests and benchmarks of the OIP models, and the two ways to
send them: JSON tensors and the protocol's binary tensor extension.

The images are scikit-learn's bundled ``load_digits``, read in the MLServer venv (Verbund's
own venv has no scikit-learn); the held-out part is the one no demo model was trained on.
Binary tensors are packed with the standard library (little-endian, as the protocol says).
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
from dataclasses import dataclass
from typing import Any

from verbund.demo_models import find_mlserver_python
from verbund.demo_models.train_digits import TRAIN_SAMPLES

HEADER = "inference-header-content-length"
# each model's input layout, as the catalogue declares it
LAYOUTS = {"digits-torch": [1, 8, 8], "digits-onnx": [1, 8, 8], "digits-keras": [8, 8, 1]}


@dataclass(frozen=True)
class Digits:
    images: list[list[float]]  # 64 pixel values 0..16 each, row by row
    labels: list[int]


def holdout() -> Digits:
    """The 450 images after the first ``TRAIN_SAMPLES`` (not trained on)."""
    python = find_mlserver_python()
    assert python is not None, "no .venv-mlserver: run ./scripts/_mlserver_env.sh"
    code = (
        "import json; from sklearn.datasets import load_digits; d = load_digits(); "
        f"print(json.dumps([d.data[{TRAIN_SAMPLES}:].tolist(), "
        f"d.target[{TRAIN_SAMPLES}:].tolist()]))"
    )
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    images, labels = json.loads(out.stdout)
    return Digits(images, labels)


def json_request(images: list[list[float]], layout: list[int]) -> dict[str, Any]:
    """FP32 images in the model's layout (all layouts hold the 64 pixels in row order)."""
    return {
        "inputs": [
            {
                "name": "images",
                "datatype": "FP32",
                "shape": [len(images), *layout],
                "data": [p for img in images for p in img],
            }
        ]
    }


def binary_request(
    images: list[list[float]], layout: list[int], binary_output: bool = True
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a binary request; the answer's ``digit`` binary too."""
    raw = struct.pack(f"<{len(images) * 64}f", *(p for img in images for p in img))
    header: dict[str, Any] = {
        "inputs": [
            {
                "name": "images",
                "datatype": "FP32",
                "shape": [len(images), *layout],
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
    }
    if binary_output:
        header["outputs"] = [{"name": "digit", "parameters": {"binary_data": True}}]
    head = json.dumps(header).encode()
    headers = {HEADER: str(len(head)), "content-type": "application/octet-stream"}
    return head + raw, headers


def digits_of(body: bytes, header_length: str | None) -> list[int]:
    """The ``digit`` output of an answer, JSON or binary."""
    if header_length is None:
        out = {o["name"]: o for o in json.loads(body)["outputs"]}["digit"]
        return [int(d) for d in out["data"]]
    split = int(header_length)
    head = json.loads(body[:split])
    offset = split
    for o in head["outputs"]:
        size = o.get("parameters", {}).get("binary_data_size", 0)
        if o["name"] == "digit":
            count = math.prod(o["shape"])
            return list(struct.unpack(f"<{count}q", body[offset : offset + size]))
        offset += size
    raise AssertionError("no digit output in the answer")


def accuracy(predicted: list[int], labels: list[int]) -> float:
    assert len(predicted) == len(labels)
    return sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(labels)
