"""The start of one on-demand engine on its node: ``python -m verbund._engine``.

Both launchers run this (the ``slurm`` one inside its ``sbatch`` job, the ``local`` one as
a process): it picks a free port on the node, writes ``{"host", "port"}`` to the report
file the agent watches (written whole, by renaming), and then *becomes* the engine
(``exec``), so cancelling the job or the process stops the engine itself.

Engines: ``llama-cpp`` (llama.cpp's OpenAI server from ``llama-cpp-python[server]``) and
``vllm`` (``vllm serve``); both answer ``GET /v1/models`` once the model is loaded, which
is what the agent waits for before it routes to the instance.

It lives outside :mod:`verbund.agent` and imports only :mod:`verbund._llama` so that
an instance start does not pay for importing the whole agent (its app, store, jobs)
before the engine even begins to load.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from verbund._llama import free_port, llama_server_command, smollm2_gguf
from verbund.errors import RunnerError

__all__ = ["engine_argv", "main"]


def engine_argv(
    engine: str, model_file: str, alias: str, host: str, port: int, n_ctx: int, threads: int,
    gpus: int, extra: list[str],
) -> list[str]:  # fmt: skip
    if engine == "vllm":
        return [
            "vllm", "serve", model_file, "--served-model-name", alias,
            "--host", host, "--port", str(port),
            "--tensor-parallel-size", str(max(1, gpus)), *extra,
        ]  # fmt: skip
    return llama_server_command(
        sys.executable, model_file, alias, port, threads, n_ctx, host=host, extra=extra
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="verbund._engine")
    p.add_argument("--engine", default="llama-cpp", choices=["llama-cpp", "vllm"])
    p.add_argument("--model-file", default="")
    p.add_argument("--alias", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--report", required=True)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("extra", nargs="*")
    a = p.parse_args(argv)
    model_file = a.model_file
    if not model_file and a.engine == "llama-cpp":
        try:
            model_file = str(smollm2_gguf())
        except RunnerError as exc:
            raise SystemExit(str(exc)) from exc
    port = free_port(a.host)
    reachable = socket.gethostname() if a.host in ("0.0.0.0", "::") else a.host  # noqa: S104
    report = Path(a.report)
    tmp = report.with_suffix(".tmp")
    tmp.write_text(json.dumps({"host": reachable, "port": port, "pid": os.getpid()}))
    tmp.replace(report)
    cmd = engine_argv(
        a.engine, model_file, a.alias, a.host, port, a.n_ctx, a.threads, a.gpus, a.extra
    )
    sys.stdout.flush()
    os.execvp(cmd[0], cmd)  # noqa: S606 - the engine replaces this process


if __name__ == "__main__":
    main()
