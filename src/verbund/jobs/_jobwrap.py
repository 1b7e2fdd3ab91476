"""Runs one recipe inside its job folder and leaves ``result.json`` behind.

This file is copied into every job folder and run by the site's Python
(``python jobwrap.py JOB_DIR`` from a Slurm batch script, or ``python jobwrap.py --detach
JOB_DIR`` by the local runner, which prints the detached wrapper's pid and start time and
returns at once), so it imports nothing from Verbund. It starts the recipe as a child
process, forwards SIGTERM to it (cancel, ``scancel``), enforces the time limit, measures
the child's CPU time and writes the outcome atomically. A job folder with ``wrapper.pid``
and no ``result.json`` whose process is gone was killed hard (SIGKILL, node failure).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GRACE_SECONDS = 10.0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks: with the pid it names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _last_line(path: Path, limit: int = 300) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return lines[-1][:limit] if lines else ""


def main(job_dir: Path) -> int:
    spec = json.loads((job_dir / "job.json").read_text())
    pid = os.getpid()
    _write_json(job_dir / "wrapper.pid", {"pid": pid, "start": _start_ticks(pid)})
    started = time.time()
    threads = str(spec.get("cpus", 1))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "PYTHONUNBUFFERED": "1",
        **spec.get("env", {}),
    }
    stopping = {"terminated": False}
    with (job_dir / "stdout.log").open("ab") as out, (job_dir / "stderr.log").open("ab") as err:
        child = subprocess.Popen(  # noqa: S603 - the staged recipe, no shell
            [sys.executable, str(job_dir / spec["recipe"]), str(job_dir)],
            cwd=job_dir,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
        )

        def on_term(signum: int, frame: object) -> None:
            stopping["terminated"] = True
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        limit = float(spec.get("time_limit_seconds", 0)) or None
        timed_out = False
        try:
            code = child.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            child.terminate()
            try:
                code = child.wait(timeout=GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
                code = child.wait()
    finished = time.time()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    sig = -code if code < 0 else None
    if timed_out:
        reason = f"time limit of {int((limit or 0) // 60)} min exceeded"
    elif stopping["terminated"]:
        reason = "terminated by a cancel request or the site's scheduler"
    elif sig is not None:
        reason = f"killed by signal {signal.Signals(sig).name}"
    elif code != 0:
        reason = _last_line(job_dir / "stderr.log") or f"exit code {code}"
    else:
        reason = ""
    _write_json(
        job_dir / "result.json",
        {
            "exit_code": code,
            "signal": sig,
            "terminated": stopping["terminated"],
            "timed_out": timed_out,
            "reason": reason,
            "started_at": started,
            "finished_at": finished,
            "wall_seconds": finished - started,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
        },
    )
    return code if code >= 0 else 128 + (sig or 0)


def detach(job_dir: Path) -> None:
    """Run :func:`main` in a new session that is no child of the caller (double fork).

    The caller (an access point) may stop or restart while the job runs; the job is
    reparented to init, which reaps it.
    """
    pid = os.fork()
    if pid > 0:
        print(pid, _start_ticks(pid), flush=True)
        os._exit(0)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    # every other inherited descriptor too: an event loop's spawn (uvloop's, for one)
    # leaves the caller's stdio socket pair open here, and the caller, reading our pid
    # to its end, would wait until the job itself ends
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os._exit(main(job_dir))


if __name__ == "__main__":
    if sys.argv[1] == "--detach":
        detach(Path(sys.argv[2]).resolve())
    sys.exit(main(Path(sys.argv[1]).resolve()))
