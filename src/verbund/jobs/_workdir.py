"""A job's folder at a site: staging inputs in, reading outcome, metrics and artifacts out.

Both runners here reach their site's work folder as a local path (the local runner's
machine, a Slurm cluster's shared file system mounted on the access point). A runner for
a remote file system would implement the same operations over its own transport.

Layout of ``<workdir>/<job_id>/``::

    job.json params.json recipe.py jobwrap.py   written at staging
    input/training  input/validation            the job's files
    wrapper.pid                                 the wrapper's pid and start time
    metrics.jsonl                               JSON lines the recipe appends
    stdout.log stderr.log                       the recipe's output
    output/                                     artifacts (the trained model)
    result.json                                 the outcome, written last
    cancel                                      present once a cancel was asked for
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from verbund.jobs._runner import JobSpec, RunPhase, RunState

WRAPPER = Path(__file__).with_name("_jobwrap.py")
# what a job may see of the access point's environment: never its keys or other secrets
SAFE_ENV = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "TZ", "USER", "LOGNAME")


def job_environment() -> dict[str, str]:
    return {k: os.environ[k] for k in SAFE_ENV if k in os.environ}


METRICS_READ_LIMIT = 256 * 1024  # bytes read per poll; the rest waits for the next poll


class JobDir:
    def __init__(self, workdir: Path, job_id: str) -> None:
        self.path = workdir / job_id

    def stage(self, spec: JobSpec, extra_seconds: int = 0) -> None:
        """Copy everything the job needs into its folder (idempotent: a retry overwrites)."""
        inputs = self.path / "input"
        inputs.mkdir(parents=True, exist_ok=True)
        (self.path / "output").mkdir(exist_ok=True)
        for name, src in spec.inputs.items():
            shutil.copyfile(src, inputs / name)
        shutil.copyfile(spec.recipe_script, self.path / "recipe.py")
        for extra in spec.support:
            shutil.copyfile(extra, self.path / extra.name)
        shutil.copyfile(WRAPPER, self.path / "jobwrap.py")
        _write_json(self.path / "params.json", spec.params)
        _write_json(
            self.path / "job.json",
            {
                "job_id": spec.job_id,
                "recipe": "recipe.py",
                "cpus": spec.resources.cpus,
                "time_limit_seconds": spec.resources.time_limit_minutes * 60 + extra_seconds,
                "env": spec.env,
            },
        )

    def result(self) -> dict[str, Any] | None:
        return _read_json(self.path / "result.json")

    def wrapper_pid(self) -> tuple[int, str] | None:
        data = _read_json(self.path / "wrapper.pid")
        if data is None:
            return None
        return int(data["pid"]), str(data.get("start", ""))

    def mark_cancelled(self) -> None:
        (self.path / "cancel").touch()

    @property
    def cancel_marked(self) -> bool:
        return (self.path / "cancel").exists()

    def final_state(self, *, vanished_reason: str) -> RunState:
        """The outcome from ``result.json``; without one, the job died without a word."""
        res = self.result()
        if res is None:
            phase = RunPhase.cancelled if self.cancel_marked else RunPhase.failed
            return RunState(phase, vanished_reason)
        common: dict[str, Any] = {
            "started_at": res.get("started_at"),
            "finished_at": res.get("finished_at"),
            "wall_seconds": float(res.get("wall_seconds") or 0.0),
            "cpu_used_seconds": float(res.get("cpu_seconds") or 0.0),
        }
        if res.get("exit_code") == 0:
            return RunState(RunPhase.succeeded, **common)
        if res.get("terminated") and self.cancel_marked:
            return RunState(RunPhase.cancelled, "cancelled", **common)
        return RunState(RunPhase.failed, str(res.get("reason") or "failed"), **common)

    def events(self, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Whole JSON lines after ``offset``; a half-written last line waits for later."""
        try:
            with (self.path / "metrics.jsonl").open("rb") as f:
                f.seek(offset)
                chunk = f.read(METRICS_READ_LIMIT)
        except FileNotFoundError:
            return [], offset
        end = chunk.rfind(b"\n")
        if end < 0:
            return [], offset
        out: list[dict[str, Any]] = []
        for line in chunk[: end + 1].splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue  # a recipe's stray output is not an event
            if isinstance(item, dict):
                out.append(item)
        return out, offset + end + 1

    def collect(self, dest: Path) -> None:
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.path / "output", tmp)
        for name in ("metrics.jsonl", "result.json"):
            if (self.path / name).exists():
                shutil.copyfile(self.path / name, tmp / name)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None
