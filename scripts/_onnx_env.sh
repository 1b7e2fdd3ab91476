#!/usr/bin/env bash
# Makes .venv-onnx/: KServe's model server (0.21) with ONNX Runtime (CPU), which serves the demo's CNN
# exported from PyTorch to ONNX. No torch here: the model file is all it needs.
# Idempotent; called by _bootstrap.sh.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv-onnx"
WANT="kserve==0.21.0 onnxruntime>=1.20,<2"
TRAIN=""
# shellcheck source=scripts/_framework_env.sh
source "$ROOT/scripts/_framework_env.sh"
