#!/usr/bin/env bash
# Makes .venv-mlserver/: MLServer 1.7 with its scikit-learn runtime, the OIP v2 model
# server of the demo federation. It has its own venv because MLServer pins FastAPI 0.115
# and Starlette 0.46, older than the access point's. Idempotent: pip runs again only when
# the wanted versions below change. Called by _bootstrap.sh; can be run on its own.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv-mlserver"
WANT="mlserver==1.7.1 mlserver-sklearn==1.7.1 scikit-learn>=1.5,<2 joblib>=1.3"

pick_python() {
  # MLServer 1.7 supports Python 3.9 to 3.12
  for py in "${PYTHON_MLSERVER:-}" "${PYTHON:-}" python3 python3.12 python3.11 python3.10; do
    if [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 &&
      "$py" -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] < (3, 13))'; then
      echo "$py"
      return
    fi
  done
  echo "MLServer 1.7 needs Python 3.9-3.12; set PYTHON_MLSERVER to one." >&2
  return 1
}

stamp="$VENV/.verbund-install"
if [ "$(cat "$stamp" 2>/dev/null)" != "$WANT" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    py=$(pick_python)
    echo "==> creating $VENV (MLServer for the demo's OIP v2 model)"
    "$py" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
  fi
  echo "==> installing $WANT into .venv-mlserver"
  # shellcheck disable=SC2086 - WANT is a list of requirement specs
  "$VENV/bin/pip" install -q $WANT
  echo "$WANT" > "$stamp"
fi
