"""Models that succeeded jobs produced: ``ft:<base>:<institution>:<suffix>``, per institution."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FT_PREFIX = "ft:"
_SUFFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def fine_tuned_name(base: str, institution: str, suffix: str) -> str:
    return f"{FT_PREFIX}{base}:{institution}:{suffix}"


def valid_suffix(suffix: str) -> bool:
    return bool(_SUFFIX.match(suffix))


@dataclass(frozen=True, slots=True)
class FineTunedModel:
    name: str
    institution: str
    job_id: str
    base: str
    recipe: str
    path: Path | None  # the artifact folder, at the site that trained it (None elsewhere)
    created_at: float
    servable: bool  # served as OIP v2 by its site (model.json)
    site: str = ""  # the site that trained it, keeps it, and serves it
    # a language model's LoRA adapter, relative to the job's folder at its site, where
    # it stays: the site's llama.cpp serves it (jobs/_adapters.py, agent side)
    adapter: str = ""


class ModelRegistry:
    """The fine-tuned models known here (at a site: its own; at an access point: every
    site's), visible only to their institution."""

    def __init__(self) -> None:
        self._models: dict[str, FineTunedModel] = {}

    def add(self, model: FineTunedModel) -> None:
        self._models[model.name] = model

    def forget_job(self, job_id: str) -> int:
        """Drop the models a job trained (its data was erased); how many."""
        gone = [n for n, m in self._models.items() if m.job_id == job_id]
        for n in gone:
            del self._models[n]
        return len(gone)

    def get(self, name: str, institution: str) -> FineTunedModel | None:
        model = self._models.get(name)
        return model if model is not None and model.institution == institution else None

    def all(self) -> list[FineTunedModel]:
        return list(self._models.values())

    def of(self, institution: str) -> list[FineTunedModel]:
        return sorted(
            (m for m in self._models.values() if m.institution == institution),
            key=lambda m: m.name,
        )

    def entries(self, institution: str) -> list[dict[str, Any]]:
        """``/v1/models`` entries for one institution."""
        return [
            {
                "id": m.name,
                "object": "model",
                "created": int(m.created_at),
                "owned_by": m.institution,
                "verbund": {
                    "kind": "oip",
                    "description": f"fine-tuned from {m.base} by job {m.job_id}",
                    "context_length": None,
                    "available": m.servable,
                    "sites": [m.site] if m.site else [],
                    "fine_tuning_job": m.job_id,
                    "infer_url": f"/v2/models/{m.name}/infer",
                },
            }
            for m in self.of(institution)
            if not m.adapter  # language models are in the federation's catalogue
        ]
