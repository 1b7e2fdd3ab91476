"""One subprocess of a test or a benchmark: its command, environment and log file.

:class:`Process` starts a command with its output appended to a log, answers whether it
still runs, and stops it: ``SIGTERM`` (or the signal given), then ``SIGKILL`` once a
deadline has passed. It is a context manager, so whatever a test starts is stopped even
when the test fails. With ``new_session`` the process leads its own process group and
signals go to the whole group (servers with worker processes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from harness.polling import wait_http

ROOT = Path(__file__).resolve().parent.parent  # the repository


def child_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This environment with ``src/`` and the repository on PYTHONPATH, and ``extra``
    applied (an entry set to None is removed)."""
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env: dict[str, str | None] = {
        **os.environ,
        "PYTHONPATH": path.rstrip(os.pathsep),
        **(extra or {}),
    }
    return {k: v for k, v in env.items() if v is not None}


class ProcessExited(RuntimeError):
    """A process ended while something waited for it to be ready."""


class Process:
    """A command run in the background, its output appended to ``log`` (None: discarded)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path | None,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        new_session: bool = False,
        stop_signal: signal.Signals = signal.SIGTERM,
        **popen: Any,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = dict(env) if env is not None else child_env()
        self.cwd = cwd
        self.new_session = new_session
        self.stop_signal = stop_signal
        self._popen_kw = popen  # e.g. preexec_fn, user, group
        self._popen: subprocess.Popen[bytes] | None = None
        self.paused = False

    def start(self) -> Process:
        out: Any = self.log.open("ab") if self.log is not None else subprocess.DEVNULL
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=self.new_session,
                **self._popen_kw,
            )
        finally:
            if self.log is not None:
                out.close()  # the child keeps its own descriptor
        self.paused = False
        return self

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._popen

    @property
    def started(self) -> bool:
        return self._popen is not None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, chars: int = 3000) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-chars:]

    def check(self) -> None:
        """Raise :class:`ProcessExited` (with the end of its log) if the process has ended."""
        code = self.popen.poll()
        if code is not None:
            raise ProcessExited(f"{self.name} exited with {code}:\n{self.log_tail()}")

    def wait_http(
        self,
        url: str,
        within: float = 30.0,
        ok: tuple[int, ...] | None = None,
        **client: Any,
    ) -> Process:
        """Until ``GET url`` answers 200 (or a status in ``ok``); fails early if this exits.
        ``client`` goes to :func:`harness.polling.wait_http` (``headers``, ``verify``).

        A process that does not get ready in time is stopped before the error is raised.
        """
        statuses = ok or (200,)
        try:
            wait_http(url, within, ok=lambda s: s in statuses, check=self.check, **client)
        except BaseException:
            self.stop()
            raise
        return self

    def wait(self, within: float) -> int:
        """Until the process ends by itself; its exit status (TimeoutExpired after ``within``)."""
        return self.popen.wait(within)

    def send(self, sig: signal.Signals) -> float:
        """Send ``sig`` (to the group with ``new_session``); the wall time it was sent."""
        if self.new_session:
            os.killpg(self.pid, sig)
        else:
            os.kill(self.pid, sig)
        return time.time()

    def pause(self) -> float:
        """SIGSTOP: the process keeps its sockets but answers nothing."""
        self.paused = True
        return self.send(signal.SIGSTOP)

    def resume(self) -> float:
        self.paused = False
        return self.send(signal.SIGCONT)

    def kill(self, within: float = 10.0) -> float:
        """SIGKILL, reaped; the wall time it was sent."""
        at = self.send(signal.SIGKILL)
        self.popen.wait(within)
        self.paused = False
        return at

    def stop(self, within: float = 20.0) -> int | None:
        """The stop signal, then SIGKILL after ``within`` seconds; the exit status."""
        if self._popen is None:
            return None
        if self._popen.poll() is not None:
            return self._popen.returncode
        with contextlib.suppress(ProcessLookupError):
            if self.paused:
                self.send(signal.SIGCONT)
            self.send(self.stop_signal)
        try:
            return self._popen.wait(within)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.send(signal.SIGKILL)
            return self._popen.wait(10)

    def __enter__(self) -> Process:
        return self if self.started else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ConfiguredServer:
    """A Verbund server process (access point, site agent) run from a config dict: the
    config is written to ``config_path`` at every launch, so a test can change it and
    start again. Subclasses say where it listens and when it is ready (``start``)."""

    process: Process

    def __init__(self, config: Mapping[str, Any], work: Path, config_path: Path) -> None:
        self.config = config
        self.work = work
        self.config_path = config_path

    def launch(self) -> Self:
        from harness.federation import write_toml

        self.work.mkdir(parents=True, exist_ok=True)
        write_toml(self.config, self.config_path)
        self.process.start()
        return self

    def start(self) -> Self:
        raise NotImplementedError

    def kill(self) -> float:
        return self.process.kill()

    def stop(self, within: float = 20.0) -> int | None:
        return self.process.stop(within)

    def __enter__(self) -> Self:
        return self if self.process.started else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
