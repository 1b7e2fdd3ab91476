# Sourced by scripts/_<framework>_env.sh: makes one framework's own venv for its OIP v2
# model server (KServe's Python model server plus the framework), so no framework enters
# Verbund's install.
# The caller sets VENV (folder), WANT (requirement specs) and TRAIN (demo models trained in
# this venv, may be empty). Idempotent: pip runs again only when WANT changes (the stamp
# file holds what was installed); a model is trained again only when its script changes.
set -euo pipefail

# shellcheck source=scripts/_install.sh
source "$ROOT/scripts/_install.sh"
# KServe 0.21 and the frameworks' wheels: Python 3.10 to 3.12
venv_install "$VENV" "$WANT" 3.10 3.13 PYTHON_MLSERVER

# Train the demo's models of this framework now, so that `verbund up` starts warm. Needs
# Verbund's own venv (scripts/_bootstrap.sh makes it first); on its own this step waits
# for the first `verbund up`, which trains what is missing.
if [ -n "${TRAIN:-}" ] && [ -x "$ROOT/.venv/bin/python" ] &&
  "$ROOT/.venv/bin/python" -c 'import verbund.demo_models' 2>/dev/null; then
  # shellcheck disable=SC2086 - TRAIN is a list of model names
  "$ROOT/.venv/bin/python" -m verbund.demo_models train $TRAIN --state-dir "$VENV/verbund-train" \
    >/dev/null || echo "==> training $TRAIN failed (see $VENV/verbund-train/logs); verbund up retries" >&2
fi
