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
# llama.cpp is built for the x86-64 baseline with AVX2, not for this machine's own CPU:
# its native build enables the AMX kernels on Sapphire/Granite Rapids, which segfault on
# the first inference in virtual machines (ggml-org/llama.cpp#20824); a portable build
# also runs on whatever CPU the next (CI) machine has.
LLAMA="llama-cpp-python[server]==0.3.36"
LLAMA_CMAKE="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
llama_stamp="$VENV/.llama-build"
if [[ ",$EXTRAS," == *",demo,"* ]] && [ "$(cat "$llama_stamp" 2>/dev/null)" != "$LLAMA $LLAMA_CMAKE" ]; then
  echo "==> building $LLAMA for the portable x86-64 baseline (~8 min the first time)"
  rebuild=()  # an existing build is replaced, its dependencies left as they are
  "$VENV/bin/python" -c 'import llama_cpp' 2>/dev/null && rebuild=(--force-reinstall --no-deps)
  CMAKE_ARGS="$LLAMA_CMAKE" "$VENV/bin/pip" install -q --no-cache-dir "${rebuild[@]}" "$LLAMA"
  echo "$LLAMA $LLAMA_CMAKE" > "$llama_stamp"
fi
stamp="$VENV/.verbund-install"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16) $EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing verbund[$EXTRAS] into .venv"
  "$VENV/bin/pip" install -q -e "$ROOT[$EXTRAS]"
  echo "$want" > "$stamp"
fi
"$ROOT/scripts/_mlserver_env.sh"  # MLServer (OIP v2 demo model) in its own .venv-mlserver
"$ROOT/scripts/_training_env.sh"  # torch, transformers, peft for LoRA jobs: .venv-training
# PyTorch, ONNX Runtime, TensorFlow: each framework's OIP model server in its own venv
"$ROOT/scripts/_torch_env.sh"
"$ROOT/scripts/_onnx_env.sh"
"$ROOT/scripts/_tf_env.sh"
"$ROOT/scripts/_idp_env.sh"  # the demo identity provider (npm oidc-provider) in .node-idp
export PATH="$VENV/bin:$PATH"
