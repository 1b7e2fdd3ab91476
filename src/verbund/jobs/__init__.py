"""Training across the federation: jobs, placement, site runners and fine-tuned models.

A job (OpenAI fine-tuning, or a general training job running a registered recipe) is
validated, placed on a site its data may go to, run there by the site's runner (local
processes or Slurm), watched through the metrics its recipe writes, and, when it
succeeds, its model is registered as ``ft:<base>:<institution>:<suffix>`` and served:
a classifier by the access point (OIP v2), a language model's LoRA adapter by llama.cpp
at the site where it was trained.
"""

from verbund.jobs._adapters import AdapterServers, die_with_parent
from verbund.jobs._artefacts import Artefacts
from verbund.jobs._dispatch import Dispatcher
from verbund.jobs._files import (
    ChainedSource,
    DirectoryFileSource,
    FileServiceSource,
    TrainingFile,
    TrainingFileSource,
)
from verbund.jobs._llms import LanguageModels, model_card
from verbund.jobs._local import LocalRunner
from verbund.jobs._models import FT_PREFIX, FineTunedModel, ModelRegistry, fine_tuned_name
from verbund.jobs._newjob import NewJob
from verbund.jobs._placement import Placement, SiteSlot, busy, misfit, place
from verbund.jobs._recipes import DataFormat, Recipe, RecipeBook, builtin_recipes
from verbund.jobs._runner import JobSpec, Resources, Runner, RunPhase, RunState
from verbund.jobs._service import JobService, make_runner
from verbund.jobs._serving import LinearModel, Predictors, load_linear
from verbund.jobs._slots import SiteSlots
from verbund.jobs._slurm import SlurmRunner, parse_scontrol, slurm_state
from verbund.jobs._status import INITIAL, TERMINAL, TRANSITIONS, JobStatus, allowed, move
from verbund.jobs._views import event, fine_tuning_job, training_job

__all__ = [
    "FT_PREFIX",
    "INITIAL",
    "TERMINAL",
    "TRANSITIONS",
    "AdapterServers",
    "Artefacts",
    "ChainedSource",
    "DataFormat",
    "DirectoryFileSource",
    "Dispatcher",
    "FileServiceSource",
    "FineTunedModel",
    "JobService",
    "JobSpec",
    "JobStatus",
    "LanguageModels",
    "LinearModel",
    "LocalRunner",
    "ModelRegistry",
    "NewJob",
    "Placement",
    "Predictors",
    "Recipe",
    "RecipeBook",
    "Resources",
    "RunPhase",
    "RunState",
    "Runner",
    "SiteSlot",
    "SiteSlots",
    "SlurmRunner",
    "TrainingFile",
    "TrainingFileSource",
    "allowed",
    "builtin_recipes",
    "busy",
    "die_with_parent",
    "event",
    "fine_tuned_name",
    "fine_tuning_job",
    "load_linear",
    "make_runner",
    "misfit",
    "model_card",
    "move",
    "parse_scontrol",
    "place",
    "slurm_state",
    "training_job",
]
