"""The local runner: each job is a process group on the site's own machine.

Jobs run detached, in their own session and as no child of the access point, so they
outlive it: after a restart the runner finds them again by the pid and start time the
wrapper wrote, and learns their outcome from ``result.json``. Holding back jobs beyond
the site's CPUs is placement's business (:func:`verbund.jobs.place`), not the runner's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from verbund.errors import RunnerError
from verbund.jobs._runner import JobSpec, RunPhase, RunState
from verbund.jobs._workdir import JobDir, job_environment

log = logging.getLogger("verbund.jobs")

KILL_AFTER_SECONDS = 15.0  # a cancelled job still alive by then is killed
START_TIMEOUT = 30.0


class LocalRunner:
    kind = "local"

    def __init__(self, site: str, workdir: Path, python: str) -> None:
        self.site = site
        self.workdir = workdir
        self.python = python
        self._cancelled_at: dict[str, float] = {}

    def _dir(self, job_id: str) -> JobDir:
        return JobDir(self.workdir, job_id)

    async def submit(self, spec: JobSpec) -> str:
        jd = self._dir(spec.job_id)
        try:
            await asyncio.to_thread(jd.stage, spec)
            proc = await asyncio.create_subprocess_exec(
                self.python,
                str(jd.path / "jobwrap.py"),
                "--detach",
                str(jd.path),
                cwd=jd.path,
                env=job_environment(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), START_TIMEOUT)
        except TimeoutError:  # before OSError, of which it is a subclass
            proc.kill()
            await proc.wait()
            raise RunnerError(f"the job at {self.site} did not start in time") from None
        except OSError as exc:
            raise RunnerError(f"cannot start the job at {self.site}: {exc.strerror}") from exc
        pid, _, start = out.decode().strip().partition(" ")
        if proc.returncode != 0 or not pid.isdigit():
            raise RunnerError(f"cannot start the job at {self.site}: {err.decode()[-300:]}")
        return f"{pid}:{start}"

    async def find(self, job_id: str) -> str | None:
        found = self._dir(job_id).wrapper_pid()
        return None if found is None else f"{found[0]}:{found[1]}"

    async def status(self, job_id: str, handle: str) -> RunState:
        jd = self._dir(job_id)
        if jd.result() is not None:
            return jd.final_state(vanished_reason="")
        pid, start = _parse(handle)
        if _alive(pid, start):
            since = self._cancelled_at.get(job_id)
            if since is not None and time.monotonic() - since > KILL_AFTER_SECONDS:
                _signal_group(pid, signal.SIGKILL)
            return RunState(RunPhase.running)
        # the wrapper may have written its result just after our first look
        return jd.final_state(
            vanished_reason="the job's process ended without a result (killed at the site?)"
        )

    async def cancel(self, job_id: str, handle: str) -> None:
        jd = self._dir(job_id)
        await asyncio.to_thread(jd.mark_cancelled)
        pid, start = _parse(handle)
        if _alive(pid, start):
            _signal_group(pid, signal.SIGTERM)
            self._cancelled_at[job_id] = time.monotonic()

    async def events(self, job_id: str, offset: int) -> tuple[list[dict[str, Any]], int]:
        return await asyncio.to_thread(self._dir(job_id).events, offset)

    async def collect(self, job_id: str, dest: Path) -> None:
        try:
            await asyncio.to_thread(self._dir(job_id).collect, dest)
        except OSError as exc:
            raise RunnerError(f"cannot collect the artifacts of {job_id}: {exc}") from exc

    async def pending(self) -> int:
        return 0

    async def aclose(self) -> None:
        return None


def _parse(handle: str) -> tuple[int, str]:
    pid, _, start = handle.partition(":")
    return int(pid), start


def _alive(pid: int, start: str) -> bool:
    """The process still runs and is the one we started (not a reused pid, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    return not start or fields[19] == start


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
