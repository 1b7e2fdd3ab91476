"""Serve one digit classifier with KServe's Python model server (OIP v2 over REST).

Runs in a framework's own venv (``.venv-torch``, ``.venv-onnx`` or ``.venv-tf``) and
imports nothing from Verbund. KServe's server, unlike MLServer 1.7's, implements the
protocol's binary tensor extension (``Inference-Header-Content-Length``) for requests and
answers, so the access point can pass binary image batches through unchanged.

Each framework's model answers the same two outputs: ``digit`` (INT64 ``[N]``, the class)
and ``probabilities`` (FP32 ``[N, 10]``, softmax of the network's logits). The input is
``images``, FP32, in the framework's layout: ``[N, 1, 8, 8]`` for PyTorch and ONNX,
``[N, 8, 8, 1]`` for Keras.

Usage (KServe reads its own options, e.g. ``--http_port``, from the same command line)::

    python serve_kserve.py --framework pytorch --model_file model.pt --model_name NAME \
        --http_port 8080 --enable_grpc false
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.errors import InvalidInput

LAYOUTS = {"pytorch": [-1, 1, 8, 8], "onnx": [-1, 1, 8, 8], "keras": [-1, 8, 8, 1]}


def _loader(framework: str, path: str) -> Any:
    """A function from an FP32 image batch to logits ``[N, 10]``, for one framework."""
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    if framework == "pytorch":
        import torch  # type: ignore[import-not-found]

        torch.set_num_threads(threads)
        net = torch.jit.load(path, map_location="cpu").eval()

        def run_torch(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return net(torch.from_numpy(x)).numpy()

        return run_torch
    if framework == "onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run_onnx(x: np.ndarray) -> np.ndarray:
            return session.run(None, {name: x})[0]

        return run_onnx
    if framework == "keras":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        net = keras.models.load_model(path)

        def run_keras(x: np.ndarray) -> np.ndarray:
            return np.asarray(net(x, training=False))

        return run_keras
    raise SystemExit(f"unknown framework {framework!r}")


class Digits(Model):
    def __init__(self, name: str, framework: str, path: str) -> None:
        super().__init__(name)
        self.framework = framework
        self.layout = LAYOUTS[framework]
        self.run = _loader(framework, path)
        self.run(np.zeros([1, *self.layout[1:]], dtype=np.float32))  # warm up
        self.ready = True

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "images", "datatype": "FP32", "shape": self.layout}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [
            {"name": "digit", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        ]

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        tensor = next((t for t in payload.inputs if t.name == "images"), None)
        if tensor is None or tensor.datatype != "FP32":
            raise InvalidInput("expected an FP32 input tensor 'images'")
        x = tensor.as_numpy().astype(np.float32, copy=False)
        if list(x.shape[1:]) != self.layout[1:]:
            raise InvalidInput(f"'images' must have shape {self.layout}")
        logits = self.run(np.ascontiguousarray(x)).astype(np.float32)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        digit = InferOutput("digit", [len(x)], "INT64")
        digit.set_data_from_numpy(probs.argmax(axis=1).astype(np.int64))
        prob = InferOutput("probabilities", list(probs.shape), "FP32")
        prob.set_data_from_numpy(probs)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=[digit, prob],
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--framework", choices=sorted(LAYOUTS), required=True)
    parser.add_argument("--model_file", required=True)
    parser.add_argument("--model_name", required=True)
    args, _ = parser.parse_known_args()  # the rest is KServe's
    model = Digits(args.model_name, args.framework, args.model_file)
    ModelServer().start([model])


if __name__ == "__main__":
    main()
