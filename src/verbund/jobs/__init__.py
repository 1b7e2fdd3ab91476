"""Training across the federation: jobs, placement, site runners and fine-tuned models.

A job (OpenAI fine-tuning, or a general training job running a registered recipe) is
validated and placed by an access point (:class:`JobService`) on a site its data may go
to, and handed to that site's agent (:class:`SiteJobs`), which runs it on the site's
runner (local processes or Slurm), watches it through the metrics its recipe writes and,
when it succeeds, keeps its model, ``ft:<base>:<institution>:<suffix>``, and serves it
to the institution that trained it, through the access points: a classifier as OIP v2,
a language model's LoRA adapter by llama.cpp at the site (announced in its catalogue).
"""

from verbund._llama import free_port, llama_server_command, smollm2_gguf
from verbund.jobs._adapters import AdapterServers, die_with_parent, stop_process
from verbund.jobs._artefacts import Artefacts
from verbund.jobs._dispatch import Dispatcher
from verbund.jobs._files import (
    ChainedSource,
    DirectoryFileSource,
    FileServiceSource,
    TrainingFile,
    TrainingFileSource,
)
from verbund.jobs._handover import Handover
from verbund.jobs._link import INSTITUTION_HEADER, SiteLink
from verbund.jobs._llms import LanguageModels, model_card
from verbund.jobs._local import LocalRunner
from verbund.jobs._mirror import follow, site_event, site_state
from verbund.jobs._models import FT_PREFIX, FineTunedModel, ModelRegistry, fine_tuned_name
from verbund.jobs._newjob import NewJob
from verbund.jobs._placement import Placement, SiteSlot, busy, misfit, place
from verbund.jobs._recipes import DataFormat, Recipe, RecipeBook, builtin_recipes
from verbund.jobs._runner import JobSpec, Resources, Runner, RunPhase, RunState
from verbund.jobs._service import JobService
from verbund.jobs._serving import LinearModel, Predictors, load_linear
from verbund.jobs._site import BlobSource, SiteFacts, SiteJobs, make_runner
from verbund.jobs._slots import RunnerReport, offer_of, site_slot
from verbund.jobs._slurm import (
    SLURM_PENDING,
    SlurmRunner,
    parse_scontrol,
    run_slurm,
    sbatch,
    sbatch_resources,
    slurm_env,
    slurm_state,
)
from verbund.jobs._status import INITIAL, TERMINAL, TRANSITIONS, JobStatus, allowed, move
from verbund.jobs._views import event, fine_tuning_job, training_job

__all__ = [
    "FT_PREFIX",
    "INITIAL",
    "INSTITUTION_HEADER",
    "SLURM_PENDING",
    "TERMINAL",
    "TRANSITIONS",
    "AdapterServers",
    "Artefacts",
    "BlobSource",
    "ChainedSource",
    "DataFormat",
    "DirectoryFileSource",
    "Dispatcher",
    "FileServiceSource",
    "FineTunedModel",
    "Handover",
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
    "RunnerReport",
    "SiteFacts",
    "SiteJobs",
    "SiteLink",
    "SiteSlot",
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
    "follow",
    "free_port",
    "llama_server_command",
    "load_linear",
    "make_runner",
    "misfit",
    "model_card",
    "move",
    "offer_of",
    "parse_scontrol",
    "place",
    "run_slurm",
    "sbatch",
    "sbatch_resources",
    "site_event",
    "site_slot",
    "site_state",
    "slurm_env",
    "slurm_state",
    "smollm2_gguf",
    "stop_process",
    "training_job",
]
