#!/usr/bin/env bash
# Makes .venv-training/: the Python a site's training runner gives its recipes (lora-sft):
# PyTorch 2.13.0 (the CPU build this machine has on disk: `torch==2.13.0` exactly, first,
# since a plain `torch` or a range would pull a multi-GB CUDA build), transformers, peft
# and gguf (transformers reads the base weights from the served GGUF file with it), and
# llama.cpp's own LoRA-to-GGUF converter, taken from the source of the llama-cpp-python
# release that serves the adapters (the converter and the server then agree on the
# format), and scikit-learn for the tabular recipes, so one Python runs every recipe. None of this enters Verbund's own install. Idempotent: pip runs again only
# when the wanted versions below change. Called by _bootstrap.sh; can be run on its own.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv-training"
TORCH="torch==2.13.0"
WANT="transformers==5.24.0 peft==0.21.2 gguf==0.19.0 accelerate==1.15.0 safetensors==0.8.0 scikit-learn>=1.5,<2"
LLAMA_SRC="llama-cpp-python==0.3.36"  # the release .venv serves with (see _bootstrap.sh)
# shellcheck source=scripts/_install.sh
source "$ROOT/scripts/_install.sh"

if venv_outdated "$VENV" "$TORCH $WANT $LLAMA_SRC"; then
  venv_create "$VENV" 3.10 4.0 PYTHON_TRAINING
  echo "==> installing $TORCH, then $WANT into .venv-training"
  "$VENV/bin/pip" install -q "$TORCH"
  # the constraint keeps every later resolution on the torch already there
  echo "$TORCH" > "$VENV/torch-constraint.txt"
  # shellcheck disable=SC2086 - WANT is a list of requirement specs
  "$VENV/bin/pip" install -q -c "$VENV/torch-constraint.txt" $WANT
  # llama.cpp's converter (convert_lora_to_gguf.py with its conversion/ package and
  # gguf-py) from the vendored llama.cpp of the serving release's source distribution
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$VENV/bin/pip" download -q --no-deps --no-binary :all: "$LLAMA_SRC" -d "$tmp"
  tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp" --wildcards \
    '*/vendor/llama.cpp/convert_lora_to_gguf.py' '*/vendor/llama.cpp/conversion/*' \
    '*/vendor/llama.cpp/gguf-py/*'
  dest="$VENV/share/llama.cpp"
  rm -rf "$dest" && mkdir -p "$dest"
  cp -r "$tmp"/llama_cpp_python-*/vendor/llama.cpp/{convert_lora_to_gguf.py,conversion,gguf-py} "$dest/"
  venv_stamp "$VENV" "$TORCH $WANT $LLAMA_SRC"
fi
