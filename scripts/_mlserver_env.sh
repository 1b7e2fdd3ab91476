#!/usr/bin/env bash
# Makes .venv-mlserver/: MLServer 1.7 with its scikit-learn runtime, the OIP v2 model
# server of the demo federation. It has its own venv because MLServer pins FastAPI 0.115
# and Starlette 0.46, older than the access point's. Idempotent: pip runs again only when
# the wanted versions below change. Called by _bootstrap.sh; can be run on its own.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv-mlserver"
WANT="mlserver==1.7.1 mlserver-sklearn==1.7.1 scikit-learn>=1.5,<2 joblib>=1.3"

# shellcheck source=scripts/_install.sh
source "$ROOT/scripts/_install.sh"
venv_install "$VENV" "$WANT" 3.9 3.13 PYTHON_MLSERVER  # MLServer 1.7: Python 3.9 to 3.12
