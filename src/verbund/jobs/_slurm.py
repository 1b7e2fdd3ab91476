"""The Slurm runner: ``sbatch`` to start, ``scontrol show job`` to ask, ``scancel`` to stop.

Without ``slurmdbd`` there is no ``sacct``: Slurm forgets a job ``MinJobAge`` seconds after
it ended. The outcome therefore also lives in the job folder (``result.json``, written by
the wrapper), which is where it is read from once Slurm no longer knows the job. The job
folder must be on a file system both the access point and the compute nodes see.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

from verbund.errors import RunnerError
from verbund.jobs._runner import JobSpec, RunPhase, RunState
from verbund.jobs._workdir import JobDir, job_environment

COMMAND_TIMEOUT = 30.0
_FIELD = re.compile(r"(\S+?)=(\S*)")
# the states of a job Slurm still holds back
SLURM_PENDING = {
    "PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"
}  # fmt: skip
_ENDED_BY_SLURM = {
    "TIMEOUT": "the time limit was exceeded",
    "NODE_FAIL": "the node failed",
    "OUT_OF_MEMORY": "the job ran out of memory",
    "BOOT_FAIL": "the node failed to boot",
    "DEADLINE": "the deadline passed",
    "PREEMPTED": "the job was preempted",
}


def parse_scontrol(text: str) -> dict[str, str]:
    """``scontrol show job -o`` output as a dict (first value wins)."""
    out: dict[str, str] = {}
    for key, value in _FIELD.findall(text):
        out.setdefault(key, value)
    return out


def _seconds(runtime: str) -> float:
    """``[D-]HH:MM:SS`` as seconds."""
    days, _, clock = runtime.rpartition("-")
    try:
        parts = [int(p) for p in clock.split(":")]
    except ValueError:
        return 0.0
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts[-3:]
    return float((int(days or 0) * 24 + h) * 3600 + m * 60 + s)


def _timestamp(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def slurm_state(fields: dict[str, str], jd: JobDir) -> RunState:
    """A pure decision: Slurm's view of a job, corrected by what the job folder says."""
    state = fields.get("JobState", "")
    if state in SLURM_PENDING:
        return RunState(RunPhase.pending, fields.get("Reason", ""))
    if state == "COMPLETING":  # ending; its final state (and so the reason) comes next
        return RunState(RunPhase.running, started_at=_timestamp(fields.get("StartTime", "")))
    if state in _ENDED_BY_SLURM:
        done = jd.final_state(vanished_reason="")
        return RunState(
            RunPhase.failed,
            f"Slurm ended the job ({state}): {_ENDED_BY_SLURM[state]}",
            started_at=done.started_at or _timestamp(fields.get("StartTime", "")),
            finished_at=done.finished_at or _timestamp(fields.get("EndTime", "")),
            wall_seconds=done.wall_seconds or _seconds(fields.get("RunTime", "")),
            cpu_used_seconds=done.cpu_used_seconds,
        )
    if state == "CANCELLED":
        done = jd.final_state(vanished_reason="")
        cancelled = jd.cancel_marked
        return RunState(
            RunPhase.cancelled if cancelled else RunPhase.failed,
            "cancelled" if cancelled else "cancelled at the site (scancel by the operator)",
            started_at=done.started_at,
            finished_at=done.finished_at,
            wall_seconds=done.wall_seconds or _seconds(fields.get("RunTime", "")),
            cpu_used_seconds=done.cpu_used_seconds,
        )
    if jd.result() is not None:  # COMPLETED, FAILED, or COMPLETING after the wrapper wrote
        return jd.final_state(vanished_reason="")
    if state in ("COMPLETED", "FAILED"):
        return RunState(
            RunPhase.failed,
            f"the job ended ({state}, exit code {fields.get('ExitCode', '?')}) without a result",
            wall_seconds=_seconds(fields.get("RunTime", "")),
        )
    return RunState(RunPhase.running, started_at=_timestamp(fields.get("StartTime", "")))


def slurm_env(slurm_conf: str) -> dict[str, str] | None:
    """The environment of Slurm's commands: the caller's, with ``SLURM_CONF`` if given."""
    return {**os.environ, "SLURM_CONF": slurm_conf} if slurm_conf else None


async def run_slurm(env: dict[str, str] | None, where: str, *args: str) -> tuple[int, str, str]:
    """One Slurm command (``sbatch``, ``squeue``, ``scancel``, ...), bounded in time:
    its exit code, output and errors; RunnerError when it is missing or does not answer."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    except OSError as exc:
        raise RunnerError(f"{args[0]} is not available at {where}: {exc.strerror}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RunnerError(f"{args[0]} at {where} did not answer in time") from None
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def sbatch_resources(
    cpus: int, memory_mb: int, minutes: int, partition: str, gpus: int, gpu_type: str
) -> list[str]:
    """``sbatch``'s options for what one job holds."""
    args = [f"--cpus-per-task={cpus}", f"--mem={memory_mb}M", f"--time={minutes}"]
    if partition:
        args.append(f"--partition={partition}")
    if gpus:
        args.append(f"--gres=gpu:{gpu_type + ':' if gpu_type else ''}{gpus}")
    return args


async def sbatch(env: dict[str, str] | None, where: str, script: Path, *options: str) -> str:
    """Submit ``script`` with ``options``; its job id (RunnerError when refused)."""
    code, out, err = await run_slurm(env, where, "sbatch", "--parsable", *options, str(script))
    if code != 0:
        raise RunnerError(f"sbatch at {where} failed: {err.strip()[:300]}")
    return out.strip().split(";", 1)[0]


class SlurmRunner:
    kind = "slurm"

    def __init__(
        self,
        site: str,
        workdir: Path,
        python: str,
        partition: str = "",
        slurm_conf: str = "",
    ) -> None:
        self.site = site
        self.workdir = workdir
        self.python = python
        self.partition = partition
        self._env = slurm_env(slurm_conf)

    def _dir(self, job_id: str) -> JobDir:
        return JobDir(self.workdir, job_id)

    async def _run(self, *args: str) -> tuple[int, str, str]:
        return await run_slurm(self._env, self.site, *args)

    async def submit(self, spec: JobSpec) -> str:
        jd = self._dir(spec.job_id)
        try:
            await asyncio.to_thread(jd.stage, spec)
            script = jd.path / "job.sbatch"
            script.write_text(
                "#!/bin/sh\n"
                f"exec {shlex.quote(self.python)} {shlex.quote(str(jd.path / 'jobwrap.py'))} "
                f"{shlex.quote(str(jd.path))}\n"
            )
        except OSError as exc:
            raise RunnerError(f"cannot stage the job at {self.site}: {exc}") from exc
        r = spec.resources
        return await sbatch(
            self._env,
            self.site,
            script,
            f"--job-name=verbund-{spec.job_id}",
            f"--chdir={jd.path}",
            f"--output={jd.path / 'slurm.out'}",
            "--ntasks=1",
            # one minute more than the wrapper's own limit, so its reason is the one shown
            *sbatch_resources(
                r.cpus, r.memory_mb, r.time_limit_minutes + 1, self.partition, r.gpus, r.gpu_type
            ),
            "--no-requeue",
            # only harmless variables: the access point's secrets stay out of the job
            "--export=" + (",".join(job_environment()) or "NONE"),
        )

    async def find(self, job_id: str) -> str | None:
        code, out, _ = await self._run("squeue", "-h", "-o", "%i", f"--name=verbund-{job_id}")
        ids = out.split()
        return ids[0] if code == 0 and ids else None

    async def status(self, job_id: str, handle: str) -> RunState:
        jd = self._dir(job_id)
        code, out, err = await self._run("scontrol", "show", "job", "-o", handle)
        if code != 0:
            if "Invalid job id" in err:
                # Slurm forgot the job (MinJobAge): the folder is all that is left
                return await asyncio.to_thread(
                    jd.final_state,
                    vanished_reason="Slurm no longer knows the job and it left no result",
                )
            raise RunnerError(f"scontrol at {self.site} failed: {err.strip()[:300]}")
        return await asyncio.to_thread(slurm_state, parse_scontrol(out), jd)

    async def cancel(self, job_id: str, handle: str) -> None:
        await asyncio.to_thread(self._dir(job_id).mark_cancelled)
        code, _, err = await self._run("scancel", handle)
        if code != 0 and "Invalid job id" not in err:
            raise RunnerError(f"scancel at {self.site} failed: {err.strip()[:300]}")

    async def events(self, job_id: str, offset: int) -> tuple[list[dict[str, Any]], int]:
        return await asyncio.to_thread(self._dir(job_id).events, offset)

    async def collect(self, job_id: str, dest: Path) -> None:
        try:
            await asyncio.to_thread(self._dir(job_id).collect, dest)
        except OSError as exc:
            raise RunnerError(f"cannot collect the artifacts of {job_id}: {exc}") from exc

    async def pending(self) -> int:
        args = ["squeue", "-h", "-t", "PENDING", "-o", "%i"]
        if self.partition:
            args.append(f"--partition={self.partition}")
        code, out, _ = await self._run(*args)
        return len(out.split()) if code == 0 else 0

    async def aclose(self) -> None:
        return None
