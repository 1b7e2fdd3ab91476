"""The interface every site runner implements, and the values that cross it.

A runner knows how to start a job at its site, how to ask about it, how to stop it and
how to read what the job wrote (metrics, artifacts). It makes no decisions: placement,
retries and the job's public status belong to :class:`verbund.jobs.JobService`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Resources:
    """What a job asks for, or what a site offers one job."""

    cpus: int = 1
    memory_mb: int = 1024
    gpus: int = 0
    gpu_type: str = ""
    time_limit_minutes: int = 60

    def as_dict(self) -> dict[str, Any]:
        return {
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
            "gpus": self.gpus,
            "gpu_type": self.gpu_type,
            "time_limit_minutes": self.time_limit_minutes,
        }


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything a runner needs to start one job: its inputs are copied to the site."""

    job_id: str
    recipe_script: Path
    inputs: dict[str, Path]  # name in the job's input folder -> local file
    params: dict[str, Any]
    resources: Resources
    support: tuple[Path, ...] = ()  # files the recipe imports, staged beside it
    env: dict[str, str] = field(default_factory=dict)


class RunPhase(enum.StrEnum):
    pending = "pending"  # accepted by the site, waiting for resources
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"  # stopped by a cancel request (ours or the site's)

    @property
    def done(self) -> bool:
        return self in (RunPhase.succeeded, RunPhase.failed, RunPhase.cancelled)


@dataclass(frozen=True, slots=True)
class RunState:
    phase: RunPhase
    reason: str = ""  # why it failed or was cancelled, for the job's error message
    started_at: float | None = None
    finished_at: float | None = None
    wall_seconds: float = 0.0  # time the job ran (not waited)
    cpu_used_seconds: float = 0.0  # measured CPU time of the recipe, where known


class Runner(Protocol):
    """A site's way of running jobs: local processes, Slurm, (later) Kubernetes."""

    @property
    def kind(self) -> str: ...

    async def submit(self, spec: JobSpec) -> str:
        """Copy the inputs to the site and start the job; returns the runner's job id."""
        ...

    async def find(self, job_id: str) -> str | None:
        """The runner's id of a job submitted before a crash, if the site knows it."""
        ...

    async def status(self, job_id: str, handle: str) -> RunState: ...

    async def cancel(self, job_id: str, handle: str) -> None: ...

    async def events(self, job_id: str, offset: int) -> tuple[list[dict[str, Any]], int]:
        """JSON lines the recipe wrote to its metrics file after byte ``offset``."""
        ...

    async def collect(self, job_id: str, dest: Path) -> None:
        """Copy the job's artifacts (its output folder) to ``dest``."""
        ...

    async def pending(self) -> int:
        """Jobs waiting in the site's queue (anyone's), for placement."""
        ...

    async def aclose(self) -> None:
        """Stop watching; running jobs keep running."""
        ...
