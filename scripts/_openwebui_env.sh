#!/usr/bin/env bash
# Makes .venv-openwebui/: Open WebUI, the chat front-end the client tests drive against the
# demo federation. Its own venv because it pulls in hundreds of packages (torch,
# transformers, chromadb, ...) that must stay out of Verbund's install. torch is installed
# first, pinned to the CPU build that lies on this machine's disk, so that open-webui's
# dependency on torch does not pull a multi-GB CUDA build. Idempotent: pip runs again only
# when the wanted versions below change. Called by scripts/test; can be run on its own.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv-openwebui"
TORCH="torch==2.13.0"
WANT="open-webui==0.12.4"

pick_python() {
  # Open WebUI 0.12 supports Python 3.11 and 3.12
  for py in "${PYTHON_OPENWEBUI:-}" "${PYTHON:-}" python3 python3.12 python3.11; do
    if [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 &&
      "$py" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))'; then
      echo "$py"
      return
    fi
  done
  echo "Open WebUI 0.12 needs Python 3.11 or 3.12; set PYTHON_OPENWEBUI to one." >&2
  return 1
}

stamp="$VENV/.verbund-install"
if [ "$(cat "$stamp" 2>/dev/null)" != "$TORCH $WANT" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    py=$(pick_python)
    echo "==> creating $VENV (Open WebUI for the client tests)"
    "$py" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
  fi
  echo "==> installing $TORCH, then $WANT into .venv-openwebui (several minutes the first time)"
  "$VENV/bin/pip" install -q "$TORCH"
  # the constraint keeps torch at the CPU build installed above
  "$VENV/bin/pip" install -q "$WANT" "$TORCH"
  echo "$TORCH $WANT" > "$stamp"
fi
