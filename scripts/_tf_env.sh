#!/usr/bin/env bash
# Makes .venv-tf/: KServe's model server (0.21) with TensorFlow (CPU build, tensorflow-cpu) and Keras 3
# for the demo's Keras digit classifier. Idempotent; called by _bootstrap.sh.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv-tf"
WANT="kserve==0.21.0 tensorflow-cpu>=2.18,<3 scikit-learn>=1.5,<2"
TRAIN="digits-keras"
# shellcheck source=scripts/_framework_env.sh
source "$ROOT/scripts/_framework_env.sh"
