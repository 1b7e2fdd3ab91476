"""Recipe ``lora-sft``: LoRA supervised fine-tuning of a causal language model.

One code path for every site: on the CPU (the embedded demo, these test machines), or on
a GPU when the job was given one (``params.gpus`` > 0 and torch sees CUDA). Needs
``torch``, ``transformers``, ``peft`` and ``gguf`` in the site's recipe Python
(``scripts/_training_env.sh`` makes one), and the base model at the site: a GGUF file
(the one the site's llama.cpp serves; transformers dequantises it to train on) or a
Hugging Face folder. The job names the model (``params.base_model``), one the site's
runner lists in ``[sites.runner] base_models``; the access point writes that entry's
path into ``params.base_model_path`` (a client cannot: a path it chose would let the
recipe read any file the runner can). Nothing is downloaded and no code from the model
folder runs.

Training data: OpenAI's chat JSON lines, ``{"messages": [{"role", "content"}, ...]}``.
The loss covers the assistant messages only (the prompt is context, not a target); an
assistant message with ``"weight": 0`` is context too, as in OpenAI's format.

Outputs: ``output/summary.json`` (resolved hyperparameters, ``trained_tokens``), the only
file the job's owner side collects; the adapter itself stays in the job folder at the
site, in ``adapter/``: the PEFT files (``adapter_config.json``,
``adapter_model.safetensors``, what vLLM loads) and ``adapter.gguf`` (llama.cpp's LoRA
format, written by llama.cpp's own converter from the Python's ``share/llama.cpp``), which
the site's llama.cpp loads beside the unchanged base GGUF.

Hyperparameters: ``n_epochs`` (3), ``batch_size`` (4), ``learning_rate_multiplier``
(scales 2e-4), ``lora_rank`` (8), ``lora_alpha`` (twice the rank), ``max_length`` (512
tokens per example), ``seed``. Each optimiser step appends a metrics line.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BASE_LEARNING_RATE = 2e-4
IGNORE = -100  # label of tokens the loss does not cover


def _auto(value: Any, default: Any) -> Any:
    return default if value in (None, "auto") else value


def hyperparameters(params: dict[str, Any]) -> dict[str, Any]:
    rank = int(_auto(params.get("lora_rank", params.get("lora_r")), 8))
    return {
        "n_epochs": int(_auto(params.get("n_epochs"), 3)),
        "batch_size": int(_auto(params.get("batch_size"), 4)),
        "learning_rate_multiplier": float(_auto(params.get("learning_rate_multiplier"), 1.0)),
        "lora_rank": rank,
        "lora_alpha": int(_auto(params.get("lora_alpha"), 2 * rank)),
        "max_length": int(_auto(params.get("max_length"), 512)),
    }


def converter() -> Path:
    """llama.cpp's LoRA converter, installed with the recipe Python (_training_env.sh)."""
    return Path(sys.prefix) / "share" / "llama.cpp" / "convert_lora_to_gguf.py"


def emit(job_dir: Path, line: dict[str, Any]) -> None:
    with (job_dir / "metrics.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def encode(tok: Any, messages: list[dict[str, Any]], max_length: int) -> dict[str, list[int]]:
    """Token ids of one conversation and labels that cover only its assistant turns."""

    def ids(msgs: list[dict[str, Any]], prompt: bool) -> list[int]:
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=prompt)
        return list(tok(text, add_special_tokens=False)["input_ids"])

    plain = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
    full = ids(plain, False)
    labels = [IGNORE] * len(full)
    for i, m in enumerate(messages):
        if m.get("role") != "assistant" or m.get("weight", 1) == 0:
            continue
        start, end = len(ids(plain[:i], True)), len(ids(plain[: i + 1], False))
        labels[start:end] = full[start:end]
    return {"input_ids": full[:max_length], "labels": labels[:max_length]}


def collate(torch: Any, items: list[dict[str, list[int]]], pad: int) -> tuple[Any, Any, Any]:
    """Token ids, attention mask and labels of a batch, padded on the right."""
    width = max(len(e["input_ids"]) for e in items)

    def padded(key: str, fill: int) -> Any:
        return torch.tensor([e[key] + [fill] * (width - len(e[key])) for e in items])

    lengths = torch.tensor([len(e["input_ids"]) for e in items])
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return padded("input_ids", pad), mask, padded("labels", IGNORE)


def load_base(path: Path, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer  # type: ignore[import-not-found]

    local: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
    if path.is_file():  # a GGUF file: transformers dequantises it
        local["gguf_file"] = path.name
        path = path.parent
    tok = AutoTokenizer.from_pretrained(path, **local)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **local)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok, model


def main(job_dir: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, ever
    import torch  # type: ignore[import-not-found]
    from peft import LoraConfig, get_peft_model  # type: ignore[import-not-found]

    params = json.loads((job_dir / "params.json").read_text())
    base = Path(str(params.get("base_model_path") or ""))
    if not base.exists():
        raise ValueError("the site's path for params.base_model is missing")
    hp = hyperparameters(params)
    seed = int(params.get("seed", 0))
    random.seed(seed)
    torch.manual_seed(seed)
    gpu = int(params.get("gpus") or 0) > 0 and torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    if not gpu:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    dtype = torch.bfloat16 if gpu and torch.cuda.is_bf16_supported() else torch.float32
    emit(job_dir, {"message": f"Loading the base model on {device.type}"})
    tok, model = load_base(base, dtype)

    examples = []
    with (job_dir / "input" / "training").open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            example = encode(tok, json.loads(line)["messages"], hp["max_length"])
            if not any(label != IGNORE for label in example["labels"]):
                raise ValueError(f"training line {n}: no assistant message to learn from")
            examples.append(example)
    if not examples:
        raise ValueError("the training file holds no examples")

    model = get_peft_model(
        model,
        LoraConfig(
            r=hp["lora_rank"],
            lora_alpha=hp["lora_alpha"],
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    model.to(device)
    model.train()
    lr = BASE_LEARNING_RATE * hp["learning_rate_multiplier"]
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    batch, epochs = hp["batch_size"], hp["n_epochs"]
    per_epoch = math.ceil(len(examples) / batch)
    total = per_epoch * epochs
    pad = tok.pad_token_id
    trained_tokens, step, started = 0, 0, time.monotonic()
    for _ in range(epochs):
        order = list(range(len(examples)))
        random.shuffle(order)
        for first in range(0, len(order), batch):
            items = [examples[i] for i in order[first : first + batch]]
            ids, mask, labels = collate(torch, items, pad)
            out = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
            )
            out.loss.backward()
            optimiser.step()
            optimiser.zero_grad()
            step += 1
            trained_tokens += sum(len(e["input_ids"]) for e in items)
            emit(
                job_dir,
                {
                    "step": step,
                    "total_steps": total,
                    "train_loss": round(out.loss.item(), 6),
                    "trained_tokens": trained_tokens,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )

    adapter = job_dir / "adapter"
    model.save_pretrained(adapter)
    # the base's configuration for the converter, as a Hugging Face folder has it: with
    # the class name, and without the "gguf" quantisation note transformers adds when it
    # dequantises a GGUF (the converter refuses quantised bases; this one was not)
    base_config = job_dir / "adapter" / "base-config"
    base_config.mkdir(exist_ok=True)
    config = model.get_base_model().config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = config.get("architectures") or [type(model.get_base_model()).__name__]
    (base_config / "config.json").write_text(json.dumps(config, indent=1))
    gguf = adapter / "adapter.gguf"
    emit(job_dir, {"message": "Converting the adapter to GGUF for llama.cpp"})
    done = subprocess.run(  # noqa: S603 - the site's converter, fixed arguments
        [
            sys.executable,
            str(converter()),
            "--base",
            str(base_config),
            "--outtype",
            "f32",
            "--outfile",
            str(gguf),
            str(adapter),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not gguf.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"converting the adapter to GGUF failed: {tail[0]}")
    (job_dir / "output" / "summary.json").write_text(
        json.dumps(
            {
                "artifact": "lora-adapter",
                "adapter": "adapter/adapter.gguf",
                "adapter_bytes": gguf.stat().st_size,
                "base_model": params.get("base_model"),
                "device": device.type,
                "hyperparameters": {
                    "n_epochs": epochs,
                    "batch_size": batch,
                    "learning_rate_multiplier": hp["learning_rate_multiplier"],
                    "lora_rank": hp["lora_rank"],
                },
                "learning_rate": lr,
                "trained_tokens": trained_tokens,
                "steps": total,
                "train_seconds": round(time.monotonic() - started, 3),
            }
        )
    )


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]))
    except (ValueError, OSError, ImportError, RuntimeError, KeyError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2)
