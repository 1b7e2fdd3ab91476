"""The JSON shapes of jobs and events: OpenAI's ``fine_tuning.job`` and our ``training.job``."""

from __future__ import annotations

import time
from typing import Any

from verbund.jobs._status import JobStatus
from verbund.store import TrainingEventRow, TrainingJobRow

_HYPER = ("n_epochs", "batch_size", "learning_rate_multiplier")


def _int(v: float | None) -> int | None:
    return None if v is None else int(v)


def _hyperparameters(row: TrainingJobRow) -> dict[str, Any]:
    resolved = (row.result or {}).get("hyperparameters")
    source = resolved if isinstance(resolved, dict) else row.params
    out = {k: source.get(k, "auto") for k in _HYPER}
    if "lora_rank" in source or "base_model" in row.params:  # a language model's LoRA job
        out["lora_rank"] = source.get("lora_rank", "auto")
    return out


def estimated_finish(row: TrainingJobRow) -> int | None:
    m = row.last_metrics or {}
    step, total = m.get("step"), m.get("total_steps")
    if row.status != JobStatus.running or row.started_at is None:
        return None
    if not isinstance(step, int | float) or not isinstance(total, int | float) or step <= 0:
        return None
    done_at = row.started_at + (time.time() - row.started_at) * total / step
    return int(done_at)


def usage_view(row: TrainingJobRow) -> dict[str, Any]:
    return {"cpu_seconds": round(row.cpu_seconds, 3), "gpu_seconds": round(row.gpu_seconds, 3)}


def fine_tuning_job(row: TrainingJobRow) -> dict[str, Any]:
    hyper = _hyperparameters(row)
    trained = (row.result or {}).get("trained_tokens")
    return {
        "object": "fine_tuning.job",
        "id": row.id,
        "model": row.model,
        "created_at": int(row.created_at),
        "finished_at": _int(row.finished_at),
        "fine_tuned_model": row.fine_tuned_model if row.status == JobStatus.succeeded else None,
        "organization_id": row.institution_id,
        "result_files": [],
        "status": row.status,
        "validation_file": row.validation_file,
        "training_file": row.training_file,
        "hyperparameters": hyper,
        "trained_tokens": trained if isinstance(trained, int) else None,
        "error": row.error,
        "integrations": [],
        "seed": row.seed,
        "estimated_finish": estimated_finish(row),
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "metadata": row.metadata_,
        "user_provided_suffix": row.suffix,
        "verbund": {
            "recipe": row.recipe,
            "site": row.site,
            "runner": row.runner,
            "data_class": row.data_class,
            "resources": row.resources,
            "metrics": row.last_metrics,
            "usage": usage_view(row),
        },
    }


def training_job(row: TrainingJobRow) -> dict[str, Any]:
    return {
        "object": "training.job",
        "id": row.id,
        "kind": row.kind,
        "recipe": row.recipe,
        "model": row.model,
        "institution": row.institution_id,
        "status": row.status,
        "site": row.site,
        "runner": row.runner,
        "training_file": row.training_file,
        "validation_file": row.validation_file,
        "data_class": row.data_class,
        "params": row.params,
        "resources": row.resources,
        "suffix": row.suffix,
        "seed": row.seed,
        "created_at": int(row.created_at),
        "started_at": _int(row.started_at),
        "finished_at": _int(row.finished_at),
        "estimated_finish": estimated_finish(row),
        "error": row.error,
        "result_model": row.fine_tuned_model if row.status == JobStatus.succeeded else None,
        "result": row.result,
        "metrics": row.last_metrics,
        "usage": usage_view(row),
        "metadata": row.metadata_,
    }


def event(row: TrainingEventRow) -> dict[str, Any]:
    return {
        "object": "fine_tuning.job.event",
        "id": row.id,
        "created_at": int(row.created_at),
        "level": row.level,
        "message": row.message,
        "type": row.type,
        "data": row.data,
    }
