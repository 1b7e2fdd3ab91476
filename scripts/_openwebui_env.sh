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

# shellcheck source=scripts/_install.sh
source "$ROOT/scripts/_install.sh"

if venv_outdated "$VENV" "$TORCH $WANT"; then
  venv_create "$VENV" 3.11 3.13 PYTHON_OPENWEBUI  # Open WebUI 0.12: Python 3.11 and 3.12
  echo "==> installing $TORCH, then $WANT into .venv-openwebui (several minutes the first time)"
  "$VENV/bin/pip" install -q "$TORCH"
  # the constraint keeps torch at the CPU build installed above
  "$VENV/bin/pip" install -q "$WANT" "$TORCH"
  venv_stamp "$VENV" "$TORCH $WANT"
fi
