"""A new job: the validated request either API makes, and its first row in the store.

Creation checks what can be checked at once (the files exist, some site may take the
job's data and size, the model name is free) so that a client hears of a hopeless job
from its request; the slower checks of the files' contents follow in the job loop
(``validating_files``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from verbund.config import DataClass, InstitutionConfig
from verbund.errors import BadRequest, NoBackendAvailable, NotFound, PolicyViolation
from verbund.jobs._events import add_event
from verbund.jobs._files import TrainingFileSource
from verbund.jobs._models import fine_tuned_name, valid_suffix
from verbund.jobs._placement import Placement
from verbund.jobs._recipes import Recipe
from verbund.jobs._runner import Resources
from verbund.jobs._status import INITIAL, JobStatus
from verbund.policy import describe_exclusions
from verbund.store import Store, TrainingJobRow

log = logging.getLogger("verbund.jobs")

ID_PREFIX = {"fine_tune": "ftjob-", "training": "trjob-"}


@dataclass(frozen=True, slots=True)
class NewJob:
    """A validated request for a job, from either API."""

    kind: str  # fine_tune | training
    institution: InstitutionConfig
    key_id: str
    data_class: DataClass  # of the request (key default raised by the header)
    recipe: Recipe
    model: str  # the base model (fine-tuning) or the recipe name (training)
    training_file: str
    validation_file: str | None
    params: dict[str, Any]
    resources: Resources
    suffix: str | None = None
    metadata: dict[str, str] | None = None
    seed: int | None = None


async def create_job(
    new: NewJob,
    store: Store,
    files: TrainingFileSource,
    place: Callable[[DataClass, str], Awaitable[Placement]],
    access_point: str,
    has_runners: bool,
) -> TrainingJobRow:
    """Write the job (``validating_files``) and its first events; raises the API error
    that tells the client why the job cannot be."""
    inst = new.institution
    data_class = new.data_class
    data_site = ""  # the site whose agent holds the files, if one does
    for param, file_id in (
        ("training_file", new.training_file),
        ("validation_file", new.validation_file),
    ):
        if file_id is None:
            continue
        try:
            f = await files.open(inst.id, file_id)
        except NotFound:
            raise BadRequest(
                f"invalid {param}: no file with id '{file_id}'.",
                code="invalid_file",
                param=param,
            ) from None
        if f.data_class is not None and f.data_class.rank > data_class.rank:
            data_class = f.data_class
        if f.site is not None:
            if data_site and f.site != data_site:
                raise BadRequest(
                    "The job's files lie at two sites; upload them to one.",
                    code="invalid_file",
                    param=param,
                )
            data_site = f.site
    placement = await place(data_class, data_site)
    if not placement.possible:
        if not has_runners:
            raise NoBackendAvailable("No site of this federation runs training jobs.")
        if not placement.unfit:
            raise PolicyViolation(
                f"No site may hold {data_class.value} training data for this institution: "
                + describe_exclusions(placement.excluded, [])
            )
        raise BadRequest(
            "No site can run this job: "
            + describe_exclusions({**placement.excluded, **placement.unfit}, []),
            code="unsatisfiable_resources",
            param="resources",
        )
    job_id = ID_PREFIX[new.kind] + secrets.token_hex(12)
    suffix = new.suffix or job_id[-8:]
    if not valid_suffix(suffix):
        raise BadRequest(
            "'suffix' may hold letters, digits, '.', '_' and '-' (at most 64).",
            code="invalid_value",
            param="suffix",
        )
    name = fine_tuned_name(new.model, inst.id, suffix)
    now = time.time()
    async with store.session() as s, s.begin():
        taken = await s.scalar(
            select(TrainingJobRow.id).where(
                TrainingJobRow.fine_tuned_model == name,
                TrainingJobRow.status.not_in((JobStatus.failed, JobStatus.cancelled)),
            )
        )
        if taken is not None:
            raise BadRequest(
                f"The model name '{name}' is taken by job {taken}; choose another suffix.",
                code="suffix_in_use",
                param="suffix",
            )
        row = TrainingJobRow(
            id=job_id,
            kind=new.kind,
            institution_id=inst.id,
            key_id=new.key_id,
            access_point=access_point,
            recipe=new.recipe.name,
            model=new.model,
            training_file=new.training_file,
            validation_file=new.validation_file,
            data_class=data_class.value,
            params=new.params,
            resources=new.resources.as_dict(),
            metadata_=new.metadata,
            suffix=suffix,
            seed=new.seed if new.seed is not None else secrets.randbelow(2**31),
            status=INITIAL,
            runner_done=False,
            cancel_requested=False,
            submit_attempts=0,
            metrics_offset=0,
            fine_tuned_model=name,
            created_at=now,
            cpu_seconds=0.0,
            gpu_seconds=0.0,
        )
        s.add(row)
        await s.flush()
        add_event(s, job_id, f"Created {new.kind.replace('_', '-')} job: {job_id}")
        add_event(s, job_id, f"Validating training file: {new.training_file}")
    log.info("job %s created for %s (%s)", job_id, inst.id, new.recipe.name)
    return row
