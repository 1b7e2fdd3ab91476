"""Taking an access point out of service without failing a request.

A load balancer learns that an access point is leaving only from its readiness check,
which it polls every few seconds. So on SIGTERM (or ``POST /admin/drain``) the access point
first only says so: ``/readyz`` answers 503 and every answer closes its connection, while
whatever still arrives is served, for ``gateway.drain_grace`` seconds. Only then does
uvicorn stop accepting, let requests and streams in flight finish (up to
``gateway.shutdown_timeout``) and the process exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Callable

from verbund.server._run import tune_gc

__all__ = ["Drain", "serving"]

log = logging.getLogger("verbund.gateway")


class Drain:
    """Whether this process is draining, and how it stops once the grace period is over."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.draining = False
        self._stop: Callable[[], None] | None = None  # uvicorn's own stop, once serving
        self._request: Callable[[], None] | None = None  # drain every process of the port

    def begin(self) -> None:
        """Readiness off at once; the stop after the grace period (when a server runs us)."""
        if self.draining:
            return
        self.draining = True
        log.info("draining: /readyz answers 503, stopping in %.1f s", self.grace)
        if self._stop is not None:
            asyncio.get_running_loop().call_later(self.grace, self._stop)

    def request(self) -> None:
        """The admin API's drain: with workers, their supervisor drains all of them."""
        if self._request is not None:
            self._request()
        else:
            self.begin()

    def take_sigterm(self, supervisor: int | None = None) -> None:
        """Make SIGTERM drain instead of stopping at once.

        Called once serving, that is inside uvicorn's signal capture: the handler replaced
        here is uvicorn's, and it is what stops the server after the grace period. A second
        SIGTERM changes nothing; SIGINT (Ctrl-C) still stops at once.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return
        loop = asyncio.get_running_loop()

        def on_sigterm(signum: int, frame: object) -> None:
            loop.call_soon_threadsafe(self.begin)

        self._stop = lambda: previous(signal.SIGTERM, None)
        if supervisor is not None:
            self._request = lambda: os.kill(supervisor, signal.SIGTERM)
        signal.signal(signal.SIGTERM, on_sigterm)


def serving(drain: Drain, supervisor: int | None = None) -> None:
    """The process runner's hook once an access point serves: GC tuned, SIGTERM drains.

    ``supervisor`` is the pid of uvicorn's worker supervisor (``--workers N``): an admin
    drain reaches one worker, which passes it on as SIGTERM to the supervisor, and the
    supervisor sends SIGTERM to every worker."""
    tune_gc()
    drain.take_sigterm(supervisor)
