# Sourced by scripts/test: Debian's Chromium for the browser tests (the console, Open
# WebUI). Playwright's Python package (in the dev extras) drives it; no browser is
# downloaded. Installs only what is missing; needs root (CI and these machines run as root).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing Debian packages: chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
