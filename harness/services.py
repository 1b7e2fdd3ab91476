"""Real PostgreSQL and Redis servers on 127.0.0.1, in temporary folders.

Both are Debian packages (``scripts/_services_env.sh`` installs them). PostgreSQL refuses
to run as root, so its processes drop to the ``postgres`` user before exec.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.polling import poll
from harness.ports import free_port
from harness.processes import Process


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed; run scripts/_services_env.sh")
    return found[-1]


def _as_postgres() -> None:
    pw = pwd.getpwnam("postgres")
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


@dataclass
class Postgres:
    root: Path
    port: int
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/verbund"

    @classmethod
    def create(cls) -> Postgres:
        """A fresh cluster with a database ``verbund``, started."""
        # its own folder: pytest's tmp_path is private to root, and postgres is not root
        root = Path(tempfile.mkdtemp(prefix="verbund-pg-"))
        root.chmod(0o755)
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            [
                _pg_bin("initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres",
                "--no-sync", "-E", "UTF8",
            ],
            check=True,
            capture_output=True,
            preexec_fn=_as_postgres,
            cwd="/tmp",
        )  # fmt: skip
        pg = cls(root, free_port())
        pg.start()
        subprocess.run(
            [
                _pg_bin("createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(pg.port),
                "-U",
                "postgres",
                "verbund",
            ],
            check=True,
            capture_output=True,
        )
        return pg

    def start(self) -> None:
        argv = [
            _pg_bin("postgres"), "-D", str(self.root / "data"), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.root}",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "max_connections=200",
        ]  # fmt: skip
        self.process = Process(
            "postgres",
            argv,
            self.root / "postgres.log",
            env=dict(os.environ),
            cwd=Path("/tmp"),
            stop_signal=signal.SIGINT,  # fast shutdown
            preexec_fn=_as_postgres,
        ).start()
        poll(self.ready, "PostgreSQL to accept connections", 30, every=0.1)

    def ready(self) -> bool:
        assert self.process is not None
        self.process.check()
        r = subprocess.run(
            [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
            check=False,
        )
        return r.returncode == 0

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(20)
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class RedisServer:
    port: int
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def create(cls) -> RedisServer:
        r = cls(free_port())
        r.start()
        return r

    def start(self) -> None:
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--protected-mode", "no",
        ]  # fmt: skip
        self.process = Process(
            "redis", argv, None, env=dict(os.environ), stop_signal=signal.SIGKILL
        ).start()
        poll(self.ready, "Redis to answer PING", 15, every=0.1)

    def ready(self) -> bool:
        assert self.process is not None
        self.process.check()
        r = subprocess.run(
            ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, check=False
        )
        return r.stdout.strip() == b"PONG"

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(10)
        self.process = None
