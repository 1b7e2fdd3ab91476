"""What it takes to run KServe's model server for one backend: the command line.

``serve_kserve.py`` runs in the framework's venv; KServe reads its own options (port,
workers, gRPC off) from the same command line.
"""

from __future__ import annotations

from pathlib import Path

from verbund.demo_models._environments import HERE


def kserve_command(
    python: Path, framework: str, model_file: Path, name: str, http_port: int
) -> list[str]:
    return [
        str(python),
        str(HERE / "serve_kserve.py"),
        "--framework",
        framework,
        "--model_file",
        str(model_file),
        "--model_name",
        name,
        "--http_port",
        str(http_port),
        "--enable_grpc",
        "false",
        "--workers",
        "1",
        "--enable_latency_logging",
        "false",
    ]
