"""Recipe ``lora-sft``: LoRA supervised fine-tuning of a causal LLM on a GPU site.

NOT TESTED in this repository (its machines have no GPU): a definition to start from.
Needs ``torch``, ``transformers`` and ``peft`` in the site's recipe Python, and the base
model's weights in a folder at the site. The job names the model (``params.base_model``),
one of those the site's runner lists in ``[sites.runner] base_models``; the access point
writes that entry's folder into ``params.base_model_path`` (a client cannot: a path it
chose would let the recipe read any folder the runner can). Nothing is downloaded and no
code from the model folder runs. Training data: chat JSON lines,
``{"messages": [{"role", "content"}, ...]}``.

Writes the adapter to ``output/adapter/`` (``adapter_config.json``,
``adapter_model.safetensors``): vLLM started with ``--enable-lora`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` loads it at run time through
``POST /v1/load_lora_adapter {"lora_name": "<ft:...>", "lora_path": "<folder>"}``.

Parameters: ``base_model`` (required), ``n_epochs`` (2), ``batch_size`` (4),
``learning_rate_multiplier`` (scales 2e-4), ``lora_r`` (16), ``lora_alpha`` (32),
``max_length`` (1024), ``seed``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _auto(value: Any, default: Any) -> Any:
    return default if value in (None, "auto") else value


def main(job_dir: Path) -> None:
    import torch  # type: ignore[import-not-found]
    from peft import LoraConfig, get_peft_model  # type: ignore[import-not-found]
    from transformers import (  # type: ignore[import-not-found]
        AutoModelForCausalLM,
        AutoTokenizer,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    params = json.loads((job_dir / "params.json").read_text())
    base = params.get("base_model_path")
    if not base or not Path(base).is_dir():
        raise ValueError("the site's folder for params.base_model is missing")
    epochs = int(_auto(params.get("n_epochs"), 2))
    batch = int(_auto(params.get("batch_size"), 4))
    lr = 2e-4 * float(_auto(params.get("learning_rate_multiplier"), 1.0))
    max_length = int(params.get("max_length", 1024))

    local = {"local_files_only": True, "trust_remote_code": False}
    tok = AutoTokenizer.from_pretrained(base, **local)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    examples = []
    with (job_dir / "input" / "training").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                text = tok.apply_chat_template(json.loads(line)["messages"], tokenize=False)
                ids = tok(text, truncation=True, max_length=max_length)["input_ids"]
                examples.append({"input_ids": ids, "labels": list(ids)})

    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.bfloat16, **local)
    model = get_peft_model(
        model,
        LoraConfig(
            r=int(params.get("lora_r", 16)),
            lora_alpha=int(params.get("lora_alpha", 32)),
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )

    def collate(batch_items: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(e["input_ids"]) for e in batch_items)
        pad = tok.pad_token_id

        def padded(key: str, fill: int) -> Any:
            return torch.tensor([e[key] + [fill] * (width - len(e[key])) for e in batch_items])

        ids = padded("input_ids", pad)
        return {"input_ids": ids, "labels": padded("labels", -100), "attention_mask": ids != pad}

    class Metrics(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                line = {"step": state.global_step, "total_steps": state.max_steps}
                line["train_loss"] = float(logs["loss"])
                with (job_dir / "metrics.jsonl").open("a") as out:
                    out.write(json.dumps(line) + "\n")

    Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(job_dir / "checkpoints"),
            num_train_epochs=epochs,
            per_device_train_batch_size=batch,
            learning_rate=lr,
            logging_steps=10,
            save_strategy="no",
            seed=int(params.get("seed", 0)),
            bf16=True,
            report_to=[],
        ),
        train_dataset=examples,
        data_collator=collate,
        callbacks=[Metrics()],
    ).train()
    model.save_pretrained(job_dir / "output" / "adapter")
    (job_dir / "output" / "summary.json").write_text(
        json.dumps(
            {
                "artifact": "lora-adapter",
                "hyperparameters": {"n_epochs": epochs, "batch_size": batch, "learning_rate": lr},
                "trained_tokens": sum(len(e["input_ids"]) for e in examples) * epochs,
            }
        )
    )


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]))
    except (ValueError, OSError, ImportError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2)
