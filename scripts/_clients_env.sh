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

stamp="$VENV/.verbund-install"
if [ "$(cat "$stamp" 2>/dev/null)" != "$PYCLIENTS" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV (Python client libraries for the client tests)"
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
  fi
  echo "==> installing $PYCLIENTS into .venv-clients"
  # shellcheck disable=SC2086 - PYCLIENTS is a list of requirement specs
  "$VENV/bin/pip" install -q $PYCLIENTS
  echo "$PYCLIENTS" > "$stamp"
fi
"$ROOT/scripts/_openwebui_env.sh"
