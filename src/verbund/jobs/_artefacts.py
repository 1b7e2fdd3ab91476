"""A succeeded job's trained model: collected from the runner, checked, and registered,
all at the site (in its agent): trained artefacts never leave the site that trained them.

The artefacts are copied from the job's folder into ``<agent state>/models/<job id>``
before the job is marked as succeeded, so a job never succeeds with a model its site
cannot serve.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verbund.jobs._models import FineTunedModel, ModelRegistry
from verbund.jobs._recipes import RecipeBook
from verbund.jobs._runner import Runner
from verbund.jobs._serving import load_linear
from verbund.store import TrainingJobRow


@dataclass(frozen=True, slots=True)
class Artefacts:
    models_dir: Path
    recipes: RecipeBook
    models: ModelRegistry

    async def collect(self, row: TrainingJobRow, runner: Runner) -> dict[str, Any]:
        """Copy the job's output here and check it; the job's ``result``.

        Raises RunnerError, OSError or ValueError when the artefacts are missing or
        unusable (a servable recipe's model must load).
        """
        dest = self.models_dir / row.id
        dest.parent.mkdir(parents=True, exist_ok=True)
        await runner.collect(row.id, dest)
        recipe = self.recipes.recipes.get(row.recipe)
        servable = recipe is not None and recipe.servable

        def check() -> dict[str, Any]:
            summary: dict[str, Any] = {}
            if (dest / "summary.json").exists():
                loaded = json.loads((dest / "summary.json").read_text())
                summary = loaded if isinstance(loaded, dict) else {}
            if servable:
                load_linear(json.loads((dest / "model.json").read_text()))
            return summary

        summary = await asyncio.to_thread(check)
        return {**summary, "artifacts": str(dest), "servable": servable}

    def register(self, row: TrainingJobRow) -> None:
        """Make a succeeded job's model known, if its artefacts are readable here."""
        path = self.models_dir / row.id
        if path.is_dir():
            model = model_of(row, path)
            if model is not None:
                self.models.add(model)


def model_of(row: TrainingJobRow, path: Path | None) -> FineTunedModel | None:
    """The model a succeeded job trained (None if it names none); ``path``: its artefacts
    here, at the site that keeps them (None at an access point)."""
    if not row.fine_tuned_model:
        return None
    return FineTunedModel(
        name=row.fine_tuned_model,
        institution=row.institution_id,
        job_id=row.id,
        base=row.model,
        recipe=row.recipe,
        path=path,
        created_at=row.finished_at or row.created_at,
        servable=bool((row.result or {}).get("servable")),
        site=row.site or "",
        adapter=adapter_of(row.result),  # served by its site's agent
    )


def adapter_of(result: dict[str, Any] | None) -> str:
    """The adapter's path in the job folder at the site, as the recipe's summary gives it:
    relative, inside the folder (a recipe cannot point the site's server elsewhere)."""
    value = (result or {}).get("adapter")
    if not isinstance(value, str) or (result or {}).get("artifact") != "lora-adapter":
        return ""
    path = Path(value)
    if path.is_absolute() or ".." in path.parts or not value.endswith(".gguf"):
        return ""
    return value
