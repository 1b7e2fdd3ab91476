"""Reading Slurm's answers: ``scontrol show job -o`` and the job folder together."""

from __future__ import annotations

import json
from pathlib import Path

from verbund.jobs import RunPhase, parse_scontrol, slurm_state
from verbund.jobs._workdir import JobDir

FAILED = (
    "JobId=1 JobName=verbund-x UserId=root(0) JobState=FAILED Reason=NonZeroExitCode "
    "Dependency=(null) ExitCode=3:0 RunTime=00:01:05 TimeLimit=00:31:00 "
    "StartTime=2026-11-27T22:41:59 EndTime=2026-11-27T22:43:04 NumCPUs=1 "
    "Command=/tmp/x/job.sbatch WorkDir=/tmp/x"
)


def folder(tmp_path: Path, result: dict[str, object] | None = None, cancel: bool = False) -> JobDir:
    jd = JobDir(tmp_path, "job")
    jd.path.mkdir(parents=True)
    if result is not None:
        (jd.path / "result.json").write_text(json.dumps(result))
    if cancel:
        jd.mark_cancelled()
    return jd


def test_parse_scontrol_one_line() -> None:
    fields = parse_scontrol(FAILED)
    assert fields["JobState"] == "FAILED"
    assert fields["ExitCode"] == "3:0"
    assert fields["RunTime"] == "00:01:05"
    assert fields["UserId"] == "root(0)"


def test_pending_and_running(tmp_path: Path) -> None:
    jd = folder(tmp_path)
    pending = slurm_state({"JobState": "PENDING", "Reason": "Resources"}, jd)
    assert pending.phase is RunPhase.pending and pending.reason == "Resources"
    running = slurm_state({"JobState": "RUNNING", "StartTime": "2026-11-27T22:41:59"}, jd)
    assert running.phase is RunPhase.running and running.started_at is not None


def test_the_wrappers_result_gives_the_reason(tmp_path: Path) -> None:
    jd = folder(
        tmp_path,
        {"exit_code": 3, "reason": "RuntimeError: loss is NaN", "wall_seconds": 65.0},
    )
    state = slurm_state(parse_scontrol(FAILED), jd)
    assert state.phase is RunPhase.failed
    assert state.reason == "RuntimeError: loss is NaN"
    assert state.wall_seconds == 65.0


def test_ended_by_slurm(tmp_path: Path) -> None:
    jd = folder(tmp_path)
    state = slurm_state({"JobState": "OUT_OF_MEMORY", "RunTime": "00:00:07"}, jd)
    assert state.phase is RunPhase.failed
    assert state.reason == "Slurm ended the job (OUT_OF_MEMORY): the job ran out of memory"
    assert state.wall_seconds == 7.0
    long = slurm_state({"JobState": "TIMEOUT", "RunTime": "1-02:03:04"}, jd)
    assert long.wall_seconds == 26 * 3600 + 3 * 60 + 4


def test_cancelled_by_us_or_by_the_operator(tmp_path: Path) -> None:
    ours = slurm_state({"JobState": "CANCELLED"}, folder(tmp_path / "a", cancel=True))
    assert ours.phase is RunPhase.cancelled
    theirs = slurm_state({"JobState": "CANCELLED"}, folder(tmp_path / "b"))
    assert theirs.phase is RunPhase.failed
    assert theirs.reason == "cancelled at the site (scancel by the operator)"


def test_completed_without_a_result_is_a_failure(tmp_path: Path) -> None:
    state = slurm_state({"JobState": "COMPLETED", "ExitCode": "0:0"}, folder(tmp_path))
    assert state.phase is RunPhase.failed and "without a result" in state.reason


def test_succeeded(tmp_path: Path) -> None:
    jd = folder(tmp_path, {"exit_code": 0, "wall_seconds": 2.5, "cpu_seconds": 2.1})
    state = slurm_state({"JobState": "COMPLETED"}, jd)
    assert state.phase is RunPhase.succeeded and state.cpu_used_seconds == 2.1
