#!/usr/bin/env bash
# Installs the real clients the client tests drive against the demo federation:
# Codex CLI (npm) into the project-local prefix .clients/codex/ (not globally), the
# Python client libraries (OpenAI Agents SDK, LangChain) into .venv-clients/, and Open
# WebUI into its own venv (scripts/_openwebui_env.sh). The client libraries get their own
# venv because their dependencies (mcp, langchain-core, tiktoken, an older websockets)
# must not change Verbund's. Idempotent: npm and pip run again only when the wanted
# versions below change. Called by scripts/test; can be run on its own.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CODEX="@openai/codex@0.171.0"
PREFIX="$ROOT/.clients/codex"
PYCLIENTS="openai-agents==0.24.0 langchain-openai==1.7.4"
VENV="$ROOT/.venv-clients"
# shellcheck source=scripts/_install.sh
source "$ROOT/scripts/_install.sh"

stamp="$PREFIX/.verbund-install"
if [ "$(cat "$stamp" 2>/dev/null)" != "$CODEX" ]; then
  command -v npm >/dev/null 2>&1 || debian_install nodejs npm
  echo "==> installing $CODEX into .clients/codex"
  mkdir -p "$PREFIX"
  npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "$CODEX"
  echo "$CODEX" > "$stamp"
fi

venv_install "$VENV" "$PYCLIENTS" 3.10 4.0 PYTHON
"$ROOT/scripts/_openwebui_env.sh"
