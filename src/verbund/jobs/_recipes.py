"""The registered training recipes: what a job may run, and what it asks of a site."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verbund.errors import BadRequest
from verbund.jobs._runner import Resources

_RECIPES = Path(__file__).with_name("recipes")


class DataFormat(enum.StrEnum):
    tabular = "tabular"  # CSV or JSON lines of features and a label (recipes/tabular.py)
    chat = "chat"  # JSON lines of {"messages": [...]}
    any = "any"  # the recipe checks its input itself


@dataclass(frozen=True, slots=True)
class Recipe:
    name: str
    description: str
    script: Path
    data: DataFormat
    resources: Resources  # the default request; a training job may ask for other values
    base_models: tuple[str, ...] = ()  # `model` values of fine-tuning jobs that use it
    support: tuple[Path, ...] = ()  # files staged next to the script
    servable: bool = False  # the access point serves its model.json itself (OIP v2)
    tested: bool = True
    # the job names a base model in params.base_model, one the site's runner lists in
    # base_models; the access point hands the recipe its folder as params.base_model_path
    site_model: bool = False

    def base_model(self, params: dict[str, Any]) -> str:
        """The site-listed base model a job of this recipe needs ("" for none)."""
        if not self.site_model:
            return ""
        name = params.get("base_model")
        return name if isinstance(name, str) else ""


def builtin_recipes() -> list[Recipe]:
    tabular = (_RECIPES / "tabular.py",)
    return [
        Recipe(
            name="sklearn-classifier",
            description="Linear classifier (scikit-learn SGD, logistic loss) on tabular data",
            script=_RECIPES / "sklearn_classifier.py",
            data=DataFormat.tabular,
            resources=Resources(cpus=1, memory_mb=1024, time_limit_minutes=30),
            base_models=("sklearn-classifier",),
            support=tabular,
            servable=True,
        ),
        Recipe(
            name="centroid-classifier",
            description="Nearest-centroid classifier in plain Python (no packages needed)",
            script=_RECIPES / "centroid_classifier.py",
            data=DataFormat.tabular,
            resources=Resources(cpus=1, memory_mb=256, time_limit_minutes=30),
            base_models=("centroid-classifier",),
            support=tabular,
            servable=True,
        ),
        Recipe(
            name="lora-sft",
            description=(
                "LoRA fine-tuning of a language model a site lists (base_models), on the "
                "CPU or on the job's GPU; served by the site's llama.cpp (GGUF adapter)"
            ),
            script=_RECIPES / "lora_sft.py",
            data=DataFormat.chat,
            # what a fine-tuning job of a small model gets; a training job asks for more
            # (``"resources": {"gpus": 1, ...}``) and runs the same code on a GPU
            resources=Resources(cpus=1, memory_mb=4096, gpus=0, time_limit_minutes=60),
            site_model=True,
        ),
    ]


@dataclass
class RecipeBook:
    """The recipes an access point knows; tests and operators may register more."""

    recipes: dict[str, Recipe] = field(default_factory=dict)

    @classmethod
    def builtin(cls) -> RecipeBook:
        return cls({r.name: r for r in builtin_recipes()})

    def register(self, recipe: Recipe) -> None:
        self.recipes[recipe.name] = recipe

    def get(self, name: str) -> Recipe:
        recipe = self.recipes.get(name)
        if recipe is None:
            raise BadRequest(
                f"Unknown recipe '{name}'; known: {', '.join(sorted(self.recipes))}.",
                code="unknown_recipe",
                param="recipe",
            )
        return recipe

    def for_base_model(self, model: str, site_models: frozenset[str] = frozenset()) -> Recipe:
        """The recipe that fine-tunes ``model``: one that names it, or, for a language model
        a site lists as a base model (``site_models``), the recipe that trains those on chat
        data (``lora-sft``)."""
        for recipe in self.recipes.values():
            if model in recipe.base_models:
                return recipe
        if model in site_models:
            for recipe in self.recipes.values():
                if recipe.site_model and recipe.data is DataFormat.chat:
                    return recipe
        fine_tunable = sorted(
            {m for r in self.recipes.values() for m in r.base_models} | set(site_models)
        )
        raise BadRequest(
            f"The model '{model}' cannot be fine-tuned here; fine-tunable models: "
            f"{', '.join(fine_tunable) or 'none'}.",
            code="model_not_available",
            param="model",
        )
