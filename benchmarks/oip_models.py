"""Throughput of the PyTorch, ONNX and Keras digit models over OIP v2: through the access
point versus straight to their model server, side by side in one run, and an OIP batch.

One site with the three models on KServe's model server (each framework from its own
venv) behind one access point. For each model and each encoding (JSON tensors, binary
tensors), requests of a fixed batch of images go one at a time, alternating between the
model server itself and the access point, for a bounded number of rounds; inferences per
second are images classified per second of wall time. Then a batch of single-image OIP
requests goes through the Batch API (files, batches) and its images per second are taken
from creation to completion.

    python -m benchmarks.oip_models [--batch-size 64] [--rounds 30] [--batch-lines 900]

Prints a table and writes benchmarks/results/oip_models.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.report import machine, publish
from harness.demo import Demo, start_demo
from harness.digits import (
    HEADER,
    LAYOUTS,
    accuracy,
    binary_request,
    digits_of,
    holdout,
    json_request,
)
from harness.federation import backend, federation, institution, site, write_toml
from harness.polling import poll
from verbund.demo import default_demo_config
from verbund.demo_models import find_python

FRAMEWORK = {"digits-torch": "pytorch", "digits-onnx": "onnx", "digits-keras": "keras"}
TRAIN = {"digits-torch": "digits-cnn", "digits-onnx": "digits-cnn", "digits-keras": "digits-keras"}


def config(state_dir: Path) -> dict[str, Any]:
    models = [m for m in default_demo_config()["models"] if m["name"] in FRAMEWORK]
    for m in models:
        m["owner_site"] = "rz-bench"
    backends = [
        backend(
            f"bench-{FRAMEWORK[m]}",
            "http://127.0.0.1:0",
            [m],
            kind="oip",
            max_concurrency=4,
            launch={"kind": "kserve", "framework": FRAMEWORK[m], "train": TRAIN[m]},
        )
        for m in FRAMEWORK
    ]
    return federation(
        "ap-bench",
        state_dir,
        [site("rz-bench", "NW", backends)],
        models=models,
        institutions=[institution("uni-a", home_region="NW")],
        batch={"poll_interval": 0.2},
        routing={"probe_timeout": 10.0, "stall_seconds": 15.0},  # busy is not hung
        gateway={"shed_after_lag": 0},  # measure, do not shed
        limits={"max_concurrent_per_key": 0, "max_concurrent_per_institution": 0},
    )


def measure(
    demo: Demo, images: list[list[float]], labels: list[int], batch: int, rounds: int
) -> list[dict[str, Any]]:
    key = {"authorization": f"Bearer {demo.key('uni-a')}"}
    rows = []
    with httpx.Client(trust_env=False, timeout=120) as c:
        for model, framework in FRAMEWORK.items():
            direct = demo.info["backends"][f"bench-{framework}"]["url"]
            for encoding in ("json", "binary"):
                took: dict[str, list[float]] = {"direct": [], "access point": []}
                right = 0
                for r in range(rounds):
                    start = (r * batch) % (len(images) - batch)
                    chunk = images[start : start + batch]
                    if encoding == "json":
                        body = json.dumps(json_request(chunk, LAYOUTS[model])).encode()
                        headers = {"content-type": "application/json"}
                    else:
                        body, headers = binary_request(chunk, LAYOUTS[model])
                    order = ("direct", "access point") if r % 2 else ("access point", "direct")
                    for where in order:
                        base = direct if where == "direct" else demo.url
                        extra = key if where == "access point" else {}
                        t0 = time.perf_counter()
                        resp = c.post(
                            f"{base}/v2/models/{model}/infer",
                            content=body,
                            headers={**headers, **extra},
                        )
                        took[where].append(time.perf_counter() - t0)
                        resp.raise_for_status()
                        if where == "access point":
                            got = digits_of(resp.content, resp.headers.get(HEADER))
                            right += round(accuracy(got, labels[start : start + batch]) * batch)
                for where, times in took.items():
                    rows.append(
                        {
                            "model": model,
                            "encoding": encoding,
                            "path": where,
                            "inferences_per_s": batch * len(times) / sum(times),
                            "p50_ms": statistics.median(times) * 1000,
                            "accuracy": right / (batch * rounds),
                        }
                    )
    return rows


def run_batch(demo: Demo, images: list[list[float]], lines: int) -> dict[str, Any]:
    model = "digits-onnx"
    endpoint = f"/v2/models/{model}/infer"
    data = "\n".join(
        json.dumps(
            {
                "custom_id": f"img-{i}",
                "method": "POST",
                "url": endpoint,
                "body": json_request([images[i % len(images)]], LAYOUTS[model]),
            }
        )
        for i in range(lines)
    ).encode()
    key = {"authorization": f"Bearer {demo.key('uni-a')}"}
    with httpx.Client(base_url=demo.url, trust_env=False, timeout=120, headers=key) as c:
        up = c.post("/v1/files", files={"file": ("x.jsonl", data)}, data={"purpose": "batch"})
        up.raise_for_status()
        t0 = time.monotonic()
        created = c.post(
            "/v1/batches",
            json={
                "input_file_id": up.json()["id"],
                "endpoint": endpoint,
                "completion_window": "24h",
            },
        )
        created.raise_for_status()
        batch: dict[str, Any] = created.json()

        def done() -> bool:
            nonlocal batch
            batch = c.get(f"/v1/batches/{batch['id']}").json()
            return batch["status"] in ("completed", "failed", "cancelled", "expired")

        poll(done, "the OIP batch", 900, every=0.2)
        seconds = time.monotonic() - t0
    return {
        "model": model,
        "lines": lines,
        "status": batch["status"],
        "completed": batch["request_counts"]["completed"],
        "seconds": seconds,
        "images_per_s": batch["request_counts"]["completed"] / seconds,
    }


def versions() -> str:
    parts = [f"Python {platform.python_version()}"]
    probes = {
        "pytorch": "torch",
        "onnx": "onnxruntime",
        "keras": "tensorflow-cpu",
    }
    kserve: set[str] = set()
    for env, dist in probes.items():
        python = find_python(env)
        if python is None:
            continue
        code = f"import importlib.metadata as m; print(m.version('{dist}'), m.version('kserve'))"
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            v, ks = out.stdout.split()
            parts.append(f"{dist} {v}")
            kserve.add(f"kserve {ks}")
    parts += sorted(kserve)
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch-lines", type=int, default=900)
    args = parser.parse_args()
    data = holdout()
    root = Path(tempfile.mkdtemp(prefix="verbund-oip-bench-"))
    cfg = write_toml(config(root / "state"), root / "federation.toml")
    demo = start_demo(root / "state", within=600, extra=["--config", str(cfg)])
    try:
        load_before = os.getloadavg()[0]
        rows = measure(demo, data.images, data.labels, args.batch_size, args.rounds)
        batch = run_batch(demo, data.images, args.batch_lines)
        load_after = os.getloadavg()[0]
    finally:
        demo.stop()
    header = "| model | tensors | path | inferences/s | p50 per request (ms) | accuracy |"
    table = [header, "|---|---|---|---|---|---|"] + [
        f"| {r['model']} | {r['encoding']} | {r['path']} | {r['inferences_per_s']:.0f} | "
        f"{r['p50_ms']:.1f} | {r['accuracy']:.3f} |"
        for r in rows
    ]
    batch_line = (
        f"OIP batch through the Batch API: {batch['completed']} of {batch['lines']} single-image "
        f"requests to {batch['model']} ({batch['status']}) in {batch['seconds']:.1f} s = "
        f"**{batch['images_per_s']:.0f} images/s**."
    )
    publish(
        "oip_models.md",
        "# OIP domain models: PyTorch, ONNX, Keras through the access point and directly\n\n"
        f"{machine(load_after)} (load {load_before:.1f} before). Versions: {versions()}.\n\n"
        f"One site, each model on KServe's model server (one worker, one thread). Requests "
        f"of {args.batch_size} images, one at a time, {args.rounds} rounds, alternating "
        "between the model server itself (`direct`) and the access point; inferences/s = "
        "images classified per second of request time. Accuracy: held-out digits through the "
        "access point.\n\n" + "\n".join(table) + "\n\n" + batch_line + "\n\n"
        "Command: `python -m benchmarks.oip_models "
        f"--batch-size {args.batch_size} --rounds {args.rounds} "
        f"--batch-lines {args.batch_lines}`\n",
    )


if __name__ == "__main__":
    main()
