#!/usr/bin/env bash
# Makes .node-idp/: the certified OpenID provider `oidc-provider` (npm), which the demo's
# identity provider (src/verbund/demo_idp/server.mjs) and the sign-in tests run with the
# machine's Node.js. Installs Debian's nodejs and npm if missing (needs root, as CI and
# these machines run). Idempotent: npm runs again only when the lock file changes.
# Called by _bootstrap.sh; can be run on its own.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR="$ROOT/.node-idp"
SRC="$ROOT/src/verbund/demo_idp"

# shellcheck source=scripts/_install.sh
source "$ROOT/scripts/_install.sh"
{ command -v node && command -v npm; } >/dev/null 2>&1 || debian_install nodejs npm
# oidc-provider 9 loads its dependencies as ES modules from CommonJS: Node 20.19 or newer
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>20||(a===20&&b>=19)?0:1)'; then
  echo "The demo identity provider needs Node.js 20.19 or newer (found $(node --version))." >&2
  exit 1
fi
want="$(sha256sum "$SRC/package-lock.json" | cut -c1-16)"
stamp="$DIR/.verbund-install"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing oidc-provider into .node-idp (the demo identity provider)"
  mkdir -p "$DIR"
  cp "$SRC/package.json" "$SRC/package-lock.json" "$DIR/"
  (cd "$DIR" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" > "$stamp"
fi
