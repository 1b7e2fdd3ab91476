"""Start-up time of the embedded demo federation: `verbund up` until it is ready.

Compares the demo as it ships (three SmolLM2 chat servers, one llama.cpp embedding server,
two MLServers with the digits model) with its chat-only part (the demo before OIP and
embeddings). Each run uses a fresh state dir; the trained digits model is cached beside
the MLServer venv, so the first run of all may include training and the rest do not.

    python -m benchmarks.demo_startup [--runs 3]

Prints a table and writes benchmarks/results/demo_startup.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.report import machine, publish
from harness.demo import start_demo
from harness.federation import write_toml
from verbund.demo import default_demo_config
from verbund.demo_models import find_mlserver_python

LLAMA = {
    b["name"]
    for site in default_demo_config()["sites"]
    for b in site["backends"]
    if b.get("launch", {}).get("kind", "llama-cpp") == "llama-cpp"
}


def chat_only(config: dict[str, Any]) -> dict[str, Any]:
    """The demo config with only the llama.cpp chat servers and the models they serve."""
    out = json.loads(json.dumps(config))
    for site in out["sites"]:
        site["backends"] = [
            b
            for b in site["backends"]
            if b.get("launch", {}).get("kind", "llama-cpp") == "llama-cpp"
            and not b.get("launch", {}).get("embedding")
        ]
    served = {m for s in out["sites"] for b in s["backends"] for m in b["models"]}
    out["models"] = [m for m in out["models"] if m["name"] in served]
    return out


def start_once(config_file: Path | None, within: float = 300.0) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="verbund-startup-")) / "state"
    start = time.monotonic()
    demo = start_demo(
        state, within=within, extra=["--config", str(config_file)] if config_file else []
    )
    try:
        return {"total": time.monotonic() - start, "backends": demo.info["backends"]}
    finally:
        demo.stop()


def _versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    for dist in ("llama_cpp_python", "verbund"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            parts.append(f"{dist} {metadata.version(dist)}")
    python = find_mlserver_python()
    if python is not None:
        out = subprocess.run(
            [
                str(python),
                "-c",
                "import mlserver, sklearn; print(mlserver.__version__, sklearn.__version__)",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0:
            ml, sk = out.stdout.split()
            parts.append(f"mlserver {ml}, scikit-learn {sk}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="verbund-startup-cfg-"))
    chat_file = base / "chat-only.toml"
    write_toml(chat_only(default_demo_config()), chat_file)
    rows = []
    for run in range(args.runs):
        for variant, cfg in (
            ("chat only (3 llama.cpp)", chat_file),
            ("full demo (9 servers)", None),
        ):
            r = start_once(cfg)
            ready = {n: b.get("ready_seconds") for n, b in r["backends"].items()}
            llama = [s for n, s in ready.items() if n in LLAMA and s is not None]
            ml = [s for n, s in ready.items() if n not in LLAMA and s is not None]
            rows.append(
                (
                    variant,
                    run + 1,
                    r["total"],
                    max(llama),
                    max(ml) if ml else None,
                    os.getloadavg()[0],
                )
            )
    header = (
        "| variant | run | ready (s) | slowest llama.cpp (s) | slowest OIP server (s) | load avg |"
    )
    sep = "|---|---|---|---|---|---|"
    table = [header, sep] + [
        f"| {v} | {n} | {t:.1f} | {lmax:.1f} | {'-' if m is None else f'{m:.1f}'} | {load:.1f} |"
        for v, n, t, lmax, m, load in rows
    ]
    publish(
        "demo_startup.md",
        "# Demo start-up: `verbund up` until ready\n\n"
        f"{machine()} (load average of each run in the table). Versions: {_versions()}.\n\n"
        "`ready` is from starting `verbund up` to its demo.json being written (every model "
        "server answering, keys made, access point listening). Server columns are measured "
        "from each server's own start; OIP servers (MLServer, KServe) start after their "
        "model is trained (or found trained).\n\n" + "\n".join(table) + "\n",
    )


if __name__ == "__main__":
    main()
