"""A real single-node Slurm cluster for tests: munged, slurmctld and slurmd on 127.0.0.1.

Everything lives in a fresh folder under /tmp (munge's own socket included, so nothing
system-wide is touched) and stops with :meth:`SlurmCluster.stop`. Debian's packages are
installed first if missing (``scripts/_slurm_env.sh``, needs root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "munged")


def ensure_slurm() -> None:
    if all(shutil.which(c) for c in COMMANDS):
        return
    subprocess.run(["bash", str(ROOT / "scripts" / "_slurm_env.sh")], check=True, timeout=900)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SlurmCluster:
    dir: Path
    conf: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=30, check=False
        )

    def wait_idle(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args} exited early; see {self.dir}/log")
            if self.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"the Slurm node did not become idle; see {self.dir}/log")

    def stop(self) -> None:
        self.run("scancel", "--user=root")  # this private cluster's jobs only
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_slurm() -> SlurmCluster:
    ensure_slurm()
    d = Path(tempfile.mkdtemp(prefix="verbund-slurm-"))
    d.chmod(0o755)  # munged checks every folder on its socket's path
    for sub in ("state", "spool", "log", "munge"):
        (d / sub).mkdir()
    shutil.chown(d / "munge", "munge", "munge")
    sock = d / "munge" / "munge.socket"
    cpus = max(1, min(2, os.cpu_count() or 1))
    conf = d / "slurm.conf"
    conf.write_text(
        f"""ClusterName=verbundtest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=500
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
KillWait=5
NodeName=localhost CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
    )
    cluster = SlurmCluster(d, conf)

    def spawn(args: list[str], log: str, **kw: object) -> None:
        with (d / "log" / log).open("wb") as out:
            cluster.procs.append(
                subprocess.Popen(
                    args,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=cluster.env,
                    start_new_session=True,
                    **kw,  # type: ignore[arg-type]
                )
            )

    try:
        spawn(
            [
                "munged",
                "--foreground",
                f"--socket={sock}",
                f"--pid-file={d}/munge/munged.pid",
                f"--log-file={d}/munge/munged.log",
                f"--seed-file={d}/munge/munged.seed",
            ],
            "munged.out",
            user="munge",
            group="munge",
            extra_groups=[],
        )
        deadline = time.monotonic() + 30
        while not sock.exists():
            if time.monotonic() > deadline or cluster.procs[0].poll() is not None:
                raise RuntimeError(f"munged did not start; see {d}/log/munged.out")
            time.sleep(0.05)
        spawn(["slurmctld", "-D"], "slurmctld.out")
        spawn(["slurmd", "-D", "-N", "localhost"], "slurmd.out")
        cluster.wait_idle()
    except BaseException:
        cluster.stop()
        raise
    return cluster
