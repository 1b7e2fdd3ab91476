# Sourced by scripts/test: Debian's Chromium for the browser tests (the console, Open
# WebUI). Playwright's Python package (in the dev extras) drives it; no browser is
# downloaded. Installs only what is missing; needs root (CI and these machines run as root).
set -euo pipefail
# shellcheck source=scripts/_install.sh
source "$ROOT/scripts/_install.sh"
command -v chromium >/dev/null 2>&1 || debian_install chromium
