"""Fine-tuned language models served by llama.cpp at their site: base GGUF + LoRA adapter.

A ``lora-sft`` job leaves its adapter at the site (``<job folder>/adapter/adapter.gguf``,
written by llama.cpp's own converter). This module starts, for each such model, a
llama.cpp server (``llama_cpp.server``) with the site's unchanged base GGUF and
``--lora_path`` the adapter, under the model's ``ft:`` name. Nothing of the adapter is
read here; only its path is handed to the server.

Why an adapter beside the base, not a merged model:

- correctness: the demo's base is a 4-bit GGUF (Q4_1). The recipe trains on exactly
  those weights (dequantised), so base + float LoRA delta is what was trained; merging
  would requantise the sum, and a rank-8 delta is smaller than a 4-bit step, so much of
  what was learnt would be rounded away (or the merged model must be kept in f16: three
  times the base's size per fine-tune);
- size: the adapter is a few MB (rank 8 on SmolLM2-135M: 9.8 MB in f32) against 98 MB
  for the base; a site keeps one base and many adapters;
- several adapters: one server per adapter, each mapping the same base file, so the
  page cache holds the base once; no adapter swap (which in ``llama_cpp.server`` means
  reloading the model) ever stands between two requests.

Servers start with one thread and without request interruption (see DESIGN.md: the
measured facts of ``llama_cpp.server`` on shared cores) and die with the process that
started them (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from verbund._llama import free_port, llama_server_command
from verbund.errors import RunnerError

log = logging.getLogger("verbund.jobs")

READY_SECONDS = 120.0  # a server that is not answering after this has failed to start
POLL_SECONDS = 0.2


def die_with_parent() -> None:
    """Runs in a child before exec: SIGTERM it when the parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """End a child: SIGTERM, then SIGKILL if it has not ended within ``timeout``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class AdapterServer:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self.process, timeout)


class AdapterServers:
    """The llama.cpp servers of one site's fine-tuned language models, by model name."""

    def __init__(self, python: str, log_dir: Path, threads: int = 1, n_ctx: int = 2048) -> None:
        self.python = python
        self.log_dir = log_dir
        self.threads = threads
        self.n_ctx = n_ctx
        self._servers: dict[str, AdapterServer] = {}
        self._ports: dict[str, int] = {}  # a restarted server keeps its address
        self._lock = asyncio.Lock()

    def url(self, name: str) -> str | None:
        server = self._servers.get(name)
        return server.url if server is not None and server.process.poll() is None else None

    async def serve(self, name: str, base: Path, adapter: Path) -> str:
        """The URL of a ready server for ``name`` (started if none runs); RunnerError when
        the files are missing or the server does not come up."""
        async with self._lock:
            url = self.url(name)
            if url is not None:
                return url
            server = await asyncio.to_thread(self._spawn, name, base, adapter)
            try:
                await _wait_ready(server)
            except RunnerError:
                await asyncio.to_thread(server.stop)
                raise
            self._servers[name] = server
            log.info("fine-tuned model %s served by llama.cpp on port %d", name, server.port)
            return server.url

    def _spawn(self, name: str, base: Path, adapter: Path) -> AdapterServer:
        if not base.is_file() or not adapter.is_file():
            raise RunnerError(f"{name}: base model or adapter file missing at the site")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        port = self._ports.get(name) or free_port()
        self._ports[name] = port
        log_path = self.log_dir / f"{name.replace(':', '_')}.log"
        cmd = llama_server_command(
            self.python, base, name, port, self.threads, self.n_ctx, lora=adapter
        )
        with log_path.open("ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "OMP_NUM_THREADS": str(self.threads)},
                preexec_fn=die_with_parent,
            )
        return AdapterServer(name, port, proc, log_path)

    async def stop(self, name: str) -> None:
        self._ports.pop(name, None)
        server = self._servers.pop(name, None)
        if server is not None:
            await asyncio.to_thread(server.stop)

    async def aclose(self) -> None:
        for name in list(self._servers):
            await self.stop(name)


async def _wait_ready(server: AdapterServer) -> None:
    deadline = time.monotonic() + READY_SECONDS
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RunnerError(
                    f"{server.name}: llama.cpp server exited ({server.process.returncode}); "
                    f"see {server.log_path}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{server.url}/v1/models")).status_code == 200:
                    return
            await asyncio.sleep(POLL_SECONDS)
    raise RunnerError(f"{server.name}: llama.cpp server not ready within {READY_SECONDS:.0f} s")
