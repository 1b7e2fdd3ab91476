"""A real single-node Slurm cluster: munged, slurmctld and slurmd on 127.0.0.1.

Everything lives in a fresh folder under /tmp (munge's own socket included, so nothing
system-wide is touched) and stops with :meth:`SlurmCluster.stop`. Debian's packages are
installed first if missing (``scripts/_slurm_env.sh``, needs root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.polling import poll
from harness.ports import free_port
from harness.processes import ROOT, Process

COMMANDS = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "munged")


def ensure_slurm() -> None:
    if all(shutil.which(c) for c in COMMANDS):
        return
    subprocess.run(["bash", str(ROOT / "scripts" / "_slurm_env.sh")], check=True, timeout=900)


@dataclass
class SlurmCluster:
    dir: Path
    conf: Path
    procs: list[Process] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=30, check=False
        )

    def wait_idle(self, within: float = 60.0) -> None:
        def idle() -> bool:
            for p in self.procs:
                p.check()
            return self.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle"

        poll(idle, f"the Slurm node to become idle (see {self.dir}/log)", within, every=0.2)

    def stop(self) -> None:
        self.run("scancel", "--user=root")  # this private cluster's jobs only
        for p in reversed(self.procs):
            p.stop(15)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
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

    def spawn(args: list[str], log: str, **kw: Any) -> Process:
        proc = Process(args[0], args, d / "log" / log, env=cluster.env, new_session=True, **kw)
        cluster.procs.append(proc)
        return proc.start()

    try:
        munged = spawn(
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

        def listening() -> bool:
            munged.check()
            return sock.exists()

        poll(listening, f"munged's socket {sock}", 30)
        spawn(["slurmctld", "-D"], "slurmctld.out")
        spawn(["slurmd", "-D", "-N", "localhost"], "slurmd.out")
        cluster.wait_idle()
    except BaseException:
        cluster.stop()
        raise
    return cluster
