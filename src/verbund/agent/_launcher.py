"""Where on-demand engines run: ``local`` processes or ``slurm`` jobs, behind one interface.

A launcher submits an instance (:mod:`verbund._engine` started on its node),
observes it (``queued`` while the scheduler holds it, ``running``, ``gone`` once it ended
for any reason: cancelled, preempted, time limit, node failure; ``unknown`` while the
scheduler cannot be asked, so a failing ``squeue`` does not count as a lost job) and
cancels it. Where the
engine listens comes back through the report file in the instance's folder, which the
engine writes before it starts; the agent then waits for the engine's health itself.
The ``slurm`` launcher assumes what HPC sites have: the agent's folder and Python on a
file system the nodes share.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from verbund.agent._launch_spec import LaunchSpec
from verbund.errors import RunnerError
from verbund.jobs import SLURM_PENDING, run_slurm, sbatch, sbatch_resources, slurm_env

__all__ = [
    "Launcher", "LocalLauncher", "Observed", "SlurmLauncher", "make_launcher", "squeue_verdict",
]  # fmt: skip

REPORT = "endpoint.json"


@dataclass(frozen=True, slots=True)
class Observed:
    state: Literal["queued", "running", "gone", "unknown"]
    endpoint: str | None = None  # http://host:port once the engine reported it
    detail: str = ""  # the scheduler's word for how it ended (CANCELLED, TIMEOUT, ...)


class Launcher(Protocol):
    kind: str

    async def submit(self, spec: LaunchSpec, instance: str, folder: Path) -> str:
        """Start ``instance``; answers its handle (job id, process id)."""
        ...

    async def observe(self, handle: str, folder: Path) -> Observed: ...

    async def cancel(self, handle: str) -> None: ...

    def adopt(self, handle: str, folder: Path) -> None:
        """Take over ``handle``, started by an earlier run of the agent (a restart)."""
        ...


def engine_command(spec: LaunchSpec, folder: Path) -> list[str]:
    cmd = [
        sys.executable, "-m", "verbund._engine", "--engine", spec.engine,
        "--alias", spec.model, "--host", spec.bind_host, "--report", str(folder / REPORT),
        "--n-ctx", str(spec.n_ctx), "--threads", str(spec.cpus), "--gpus", str(spec.gpus),
    ]  # fmt: skip
    if spec.model_file:
        cmd += ["--model-file", spec.model_file]
    if spec.extra_args:
        cmd += ["--", *spec.extra_args]
    return cmd


def reported_endpoint(folder: Path) -> str | None:
    try:
        got = json.loads((folder / REPORT).read_text())
        return f"http://{got['host']}:{int(got['port'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


INSTANCE_ENV = "VERBUND_ON_DEMAND_INSTANCE"  # marks a local engine as the instance's own


def _spawn(cmd: list[str], folder: Path) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "engine.log").open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # it outlives the agent; a restarted one adopts it
            env={**os.environ, INSTANCE_ENV: str(folder)},
        )


def _ours(pid: int, folder: Path) -> bool:
    """Whether process ``pid`` still runs and is the engine of the instance in ``folder``
    (not a process that got its number since): its environment names the folder."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False  # ended, not yet reaped
    return f"{INSTANCE_ENV}={folder}".encode() in environ.split(b"\0")


def _end_adopted(pid: int, folder: Path) -> None:
    """SIGTERM to an adopted engine's process group, SIGKILL if it is still there after
    10 s (it is not our child: its exit is watched in /proc, not waited for)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        end = time.monotonic() + 10
        while _ours(pid, folder) and time.monotonic() < end:
            time.sleep(0.1)
        if not _ours(pid, folder):
            return


def _write_script(folder: Path, cmd: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "job.sh"
    script.write_text("#!/bin/sh\nexec " + shlex.join(cmd) + "\n")
    return script


class LocalLauncher:
    """Processes on the agent's own machine (the embedded demo, laptops)."""

    kind = "local"

    def __init__(self) -> None:
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._adopted: dict[str, Path] = {}  # started by an earlier run of the agent

    def adopt(self, handle: str, folder: Path) -> None:
        self._adopted[handle] = folder

    async def submit(self, spec: LaunchSpec, instance: str, folder: Path) -> str:
        proc = await asyncio.to_thread(_spawn, engine_command(spec, folder), folder)
        self._procs[str(proc.pid)] = proc
        return str(proc.pid)

    async def observe(self, handle: str, folder: Path) -> Observed:
        if handle in self._adopted:
            if await asyncio.to_thread(_ours, int(handle), folder):
                return Observed("running", reported_endpoint(folder))
            del self._adopted[handle]
            return Observed("gone", detail="ended while the agent was away")
        proc = self._procs.get(handle)
        if proc is None or proc.poll() is not None:
            self._procs.pop(handle, None)
            return Observed("gone", detail=f"exit {proc.returncode}" if proc else "unknown")
        return Observed("running", reported_endpoint(folder))

    async def cancel(self, handle: str) -> None:
        adopted = self._adopted.pop(handle, None)
        if adopted is not None:
            await asyncio.to_thread(_end_adopted, int(handle), adopted)
            return
        proc = self._procs.pop(handle, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait)


# COMPLETING (cancelled, timed out, its processes being ended) is not among them: the
# instance is gone for routing at once, and its replacement may start
_RUNNING = {"RUNNING", "SUSPENDED", "STAGE_OUT", "SIGNALING"}


def squeue_verdict(code: int, out: str, err: str) -> Observed:
    """What ``squeue -h -j JOB -o %T`` says of one job. Gone only when Slurm says so (the
    job is not listed, or its id is no longer known); a failing ``squeue`` (controller
    down or busy, a time-out) is ``unknown``: the instance is kept and asked again."""
    state = out.strip()
    if code == 0:
        if state in SLURM_PENDING:
            return Observed("queued")
        if state in _RUNNING:
            return Observed("running")
        return Observed("gone", detail=state or "not in the queue")
    if "Invalid job id" in err:
        return Observed("gone", detail="not in the queue")
    return Observed("unknown", detail=err.strip()[:200] or f"squeue exit {code}")


class SlurmLauncher:
    """``sbatch`` jobs: one job per instance, the engine its only step (the Slurm
    commands as the job runner runs them: :mod:`verbund.jobs._slurm`)."""

    kind = "slurm"

    def __init__(self, slurm_conf: str = "") -> None:
        self._env = slurm_env(slurm_conf)

    async def submit(self, spec: LaunchSpec, instance: str, folder: Path) -> str:
        script = await asyncio.to_thread(_write_script, folder, engine_command(spec, folder))
        return await sbatch(
            self._env,
            "the cluster",
            script,
            f"--job-name=verbund-{spec.model}",
            f"--output={folder / 'engine.log'}",
            f"--chdir={folder}",
            *sbatch_resources(
                spec.cpus, spec.memory_mb, spec.time_limit_minutes,
                spec.partition, spec.gpus, spec.gpu_type,
            ),
        )  # fmt: skip

    async def observe(self, handle: str, folder: Path) -> Observed:
        try:
            code, out, err = await run_slurm(
                self._env, "the cluster", "squeue", "-h", "-j", handle, "-o", "%T"
            )
        except RunnerError as exc:  # squeue missing or hanging: nothing is known of the job
            return Observed("unknown", detail=str(exc))
        seen = squeue_verdict(code, out, err)
        if seen.state == "running":
            return Observed("running", reported_endpoint(folder))
        return seen

    async def cancel(self, handle: str) -> None:
        await run_slurm(self._env, "the cluster", "scancel", handle)

    def adopt(self, handle: str, folder: Path) -> None:
        """Nothing to do: a job is observed by its id, whoever submitted it."""


def make_launcher(spec: LaunchSpec) -> Launcher:
    return SlurmLauncher(spec.slurm_conf) if spec.launcher == "slurm" else LocalLauncher()
