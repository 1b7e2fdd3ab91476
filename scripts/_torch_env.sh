#!/usr/bin/env bash
# Makes .venv-torch/: KServe's model server (0.21) with PyTorch 2.13.0 (CPU build; it lies on this
# machine's disk, any other torch pulls a multi-GB CUDA build) for the demo's CNN digit
# classifier, plus onnx/onnxscript to export the same network to ONNX for .venv-onnx.
# Idempotent; called by _bootstrap.sh.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv-torch"
WANT="kserve==0.21.0 torch==2.13.0 scikit-learn>=1.5,<2 onnx>=1.17 onnxscript>=0.2"
TRAIN="digits-cnn"
# shellcheck source=scripts/_framework_env.sh
source "$ROOT/scripts/_framework_env.sh"
