"""Open WebUI (PyPI ``open-webui``, in ``.venv-openwebui`` made by
``scripts/_openwebui_env.sh``) as a process, configured with a Verbund access point as
its OpenAI connection, for the client tests.

The environment is the deployment documented in docs/clients.md: the chat connection
(``OPENAI_API_BASE_URL``/``OPENAI_API_KEY``), the embedding connection for RAG, which does
not follow the chat connection (``RAG_OPENAI_API_BASE_URL``/``RAG_OPENAI_API_KEY`` with
``RAG_EMBEDDING_ENGINE=openai``), the user headers it forwards to Verbund
(``ENABLE_FORWARD_USER_INFO_HEADERS``), and everything that would reach the internet
switched off (``OFFLINE_MODE``, ``HF_HUB_OFFLINE``, no Ollama, no telemetry, no update
check). Without sign-in (``WEBUI_AUTH=False``) the browser is the single admin user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness.ports import free_port
from harness.processes import ROOT, Process

VENV = Path(os.environ.get("VERBUND_OPENWEBUI_VENV", ROOT / ".venv-openwebui"))


@dataclass
class OpenWebUI:
    process: Process
    url: str
    data_dir: Path

    def stop(self) -> int | None:
        return self.process.stop(30)


def openwebui_env(
    verbund_url: str, key: str, embedding_model: str, data_dir: Path
) -> dict[str, str]:
    """Open WebUI's settings for a Verbund access point at ``verbund_url`` (without /v1)."""
    api = verbund_url.rstrip("/") + "/v1"
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(data_dir),
        "DATA_DIR": str(data_dir),
        "WEBUI_SECRET_KEY": "verbund-test-only",
        "WEBUI_AUTH": "False",
        # the chat connection
        "ENABLE_OLLAMA_API": "False",
        "ENABLE_OPENAI_API": "True",
        "OPENAI_API_BASE_URL": api,
        "OPENAI_API_KEY": key,
        # RAG embeddings: a connection of their own, not the chat one
        "RAG_EMBEDDING_ENGINE": "openai",
        "RAG_EMBEDDING_MODEL": embedding_model,
        "RAG_OPENAI_API_BASE_URL": api,
        "RAG_OPENAI_API_KEY": key,
        "CHUNK_SIZE": "400",  # the demo's embedding model reads 512 tokens
        "CHUNK_OVERLAP": "50",
        # who asks: Verbund derives a per-person pseudonym for a front-end's key
        "ENABLE_FORWARD_USER_INFO_HEADERS": "True",
        # nothing from the internet, no background generations that cost CPU here
        "OFFLINE_MODE": "True",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
        "DO_NOT_TRACK": "True",
        "SCARF_NO_ANALYTICS": "True",
        "ENABLE_VERSION_UPDATE_CHECK": "False",
        "ENABLE_TITLE_GENERATION": "False",
        "ENABLE_TAGS_GENERATION": "False",
        "ENABLE_FOLLOW_UP_GENERATION": "False",
        "ENABLE_AUTOCOMPLETE_GENERATION": "False",
        "ENABLE_RETRIEVAL_QUERY_GENERATION": "False",
        "ENABLE_WEB_SEARCH": "False",
    }


def start_openwebui(
    data_dir: Path,
    verbund_url: str,
    key: str,
    embedding_model: str,
    *,
    within: float = 900.0,  # its imports (torch, transformers, chromadb) are slow on 2 cores
) -> OpenWebUI:
    """Run ``open-webui serve`` on a free port until ``/health`` answers."""
    program = VENV / "bin" / "open-webui"
    if not program.exists():
        raise RuntimeError(f"{program} not found: scripts/_openwebui_env.sh installs it")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = Process(
        "open-webui",
        [str(program), "serve", "--host", "127.0.0.1", "--port", str(port)],
        data_dir.parent / f"{data_dir.name}-openwebui.log",
        env=openwebui_env(verbund_url, key, embedding_model, data_dir),
        cwd=data_dir,
        new_session=True,  # it may start workers; signals go to the group
    ).start()
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/health", within)
    return OpenWebUI(proc, url, data_dir)
