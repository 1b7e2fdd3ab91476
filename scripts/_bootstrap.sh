# Sourced by the scripts in this folder: makes .venv and installs Verbund into it.
# Idempotent and quick once done: pip runs again only when pyproject.toml changed.
# llama-cpp-python compiles from source once (several minutes) and stays in .venv.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PYTHON_BIN=${PYTHON:-python3}
EXTRAS=${VERBUND_EXTRAS:-dev,demo,postgres,otel}

if ! "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Verbund needs Python 3.11 or newer ($PYTHON_BIN is older)." >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON_BIN" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
stamp="$VENV/.verbund-install"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16) $EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing verbund[$EXTRAS] into .venv (the first time compiles llama.cpp: ~8 min)"
  "$VENV/bin/pip" install -q -e "$ROOT[$EXTRAS]"
  echo "$want" > "$stamp"
fi
"$ROOT/scripts/_mlserver_env.sh"  # MLServer (OIP v2 demo model) in its own .venv-mlserver
export PATH="$VENV/bin:$PATH"
