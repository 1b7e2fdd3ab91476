"""The local runner's submit returns once the job is started, not when it ends, also
under uvloop (the access point's loop), whose spawn leaves the caller's stdio sockets
open in the child: the detached wrapper closes every inherited descriptor."""

from __future__ import annotations

import sys
from pathlib import Path

import uvloop

from harness.polling import poll
from tests.jobs.helpers import HERE
from verbund.jobs import JobSpec, LocalRunner, Resources, RunPhase


def test_submit_returns_while_the_job_still_runs(tmp_path: Path) -> None:
    runner = LocalRunner("west", tmp_path, sys.executable)
    spec = JobSpec(
        job_id="job-hold",
        recipe_script=HERE / "recipes" / "hold.py",
        support=(),
        inputs={},
        params={},
        resources=Resources(cpus=1, memory_mb=64, time_limit_minutes=2),
    )

    async def submit() -> RunPhase:
        handle = await runner.submit(spec)
        return (await runner.status(spec.job_id, handle)).phase

    phase = uvloop.run(submit())
    job = tmp_path / spec.job_id
    assert phase is RunPhase.running
    assert not (job / "result.json").exists()
    (job / "release").touch()
    poll(lambda: (job / "result.json").exists(), "the job to end", 60)
