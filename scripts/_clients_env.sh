#!/usr/bin/env bash
# Installs the real clients the client tests drive against the demo federation:
# Codex CLI (npm) into the project-local prefix .clients/codex/ (not globally), and
# Open WebUI into its own venv (scripts/_openwebui_env.sh). The Python client libraries
# (openai-agents, langchain-openai) are in Verbund's dev extras. Idempotent: npm runs
# again only when the wanted version changes. Called by scripts/test; can be run alone.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CODEX="@openai/codex@0.171.0"
PREFIX="$ROOT/.clients/codex"

stamp="$PREFIX/.verbund-install"
if [ "$(cat "$stamp" 2>/dev/null)" != "$CODEX" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "==> installing Debian packages: nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  echo "==> installing $CODEX into .clients/codex"
  mkdir -p "$PREFIX"
  npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "$CODEX"
  echo "$CODEX" > "$stamp"
fi
"$ROOT/scripts/_openwebui_env.sh"
