"""Backend health: passive failure tracking (ejection) and what probes conclude.

Only failures of the backend count: connection errors, timeouts and 5xx. Errors caused
by the request (4xx) never eject a backend, and neither does one request's content: a
failure counts toward ejection only once per distinct request body (a client retrying a
prompt that makes the engine fail sends the same body again), and a backend that
*answered* with 5xx is ejected only after a health probe confirms that it is the backend
and not the requests (a poison prompt fails, the probe passes). Timeouts eject without
that confirmation: a backend that does not answer at all is not being picky.

A refused connection marks the backend down at once (nothing listens there); other
failures eject it after ``eject_after_failures`` in a row, for a time that doubles with
each ejection. An ejected or down backend returns only after a probe succeeds.

Whatever takes a backend out of rotation — ejection or failed probes — never takes more
than ``max_ejection_percent`` of a model's backends out at once; only a refused
connection is stronger than the cap. The router adds the other half of that safety net
(panic routing, ``routing.panic_threshold``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from enum import Enum

from verbund.config import RoutingConfig
from verbund.federation._backend import Backend
from verbund.federation._federation import Federation

log = logging.getLogger("verbund.health")

MAX_FAILED_KEYS = 64  # distinct failing requests remembered per backend until a success
CAP_LOG_SECONDS = 10.0  # one "held back by the cap" warning per backend this often


class Probe(Enum):
    ok = "ok"
    refused = "refused"  # nothing listens: down at once
    failed = "failed"  # timeout or error status: down after PROBE_FAILURES in a row


PROBE_FAILURES = 2
BUSY_GRACE_SECONDS = 30.0  # a backend with requests in flight that answered this recently


class Failure(Enum):
    refused = "refused"  # nothing accepted the connection
    timeout = "timeout"  # no answer in time
    broken = "broken"  # the connection broke, or the answer was not HTTP
    server_error = "server_error"  # it answered, with a 5xx


def request_key(body: bytes) -> bytes:
    """A short fingerprint of a request's content, to tell distinct requests apart."""
    return hashlib.blake2b(body, digest_size=8).digest()


class HealthTracker:
    """Bookkeeping of backend health; time is passed in so tests control it.

    A backend that returns from ejection or from being down ramps up over
    ``slow_start_seconds`` (see the router's score).
    """

    def __init__(self, routing: RoutingConfig, federation: Federation | None = None) -> None:
        self._cfg = routing
        self._federation = federation
        self._cap_logged: dict[str, float] = {}

    def on_success(self, backend: Backend, now: float | None = None) -> None:
        backend.consecutive_failures = 0
        if backend.failed_keys:
            backend.failed_keys.clear()
        backend.confirm_since = -1.0
        backend.last_success = time.monotonic() if now is None else now

    def on_failure(
        self, backend: Backend, failure: Failure, now: float, key: bytes | None = None
    ) -> None:
        """A request failed at ``backend``; ``key`` (:func:`request_key`) names its content."""
        backend.failures += 1
        backend.last_error = failure.value
        if failure is Failure.refused:
            if backend.healthy:
                log.warning("backend %s down: connection refused", backend.name)
                backend.down_since = backend.out_since = now
            backend.healthy = False
            backend.refused = True
            return
        if key is not None:
            if key in backend.failed_keys:
                return  # this content failed here before: the request, not the backend
            if len(backend.failed_keys) < MAX_FAILED_KEYS:
                backend.failed_keys.add(key)
        backend.consecutive_failures += 1
        if backend.consecutive_failures < self._cfg.eject_after_failures or now < (
            backend.ejected_until
        ):
            return
        if failure is Failure.server_error:
            # it answered (or at least accepted): let a probe decide whether the backend
            # is broken or the requests are; the prober resolves this
            if backend.confirm_since < 0:
                backend.confirm_since = now
            return
        self.eject(backend, now)

    def awaiting_confirmation(self, backend: Backend) -> bool:
        return backend.confirm_since >= 0

    def may_remove(self, backend: Backend, now: float) -> bool:
        """Whether taking ``backend`` out keeps every model within ``max_ejection_percent``.

        Counted as out: peers ejected or marked down, for whatever reason."""
        if self._federation is None:
            return True
        limit = self._cfg.max_ejection_percent / 100
        for model in backend.config.models:
            peers = self._federation.backends_for(model)
            if len(peers) <= 1:
                continue
            out = sum(
                1 for b in peers if b is not backend and (not b.healthy or now < b.ejected_until)
            )
            if (out + 1) / len(peers) > limit:
                return False
        return True

    def _held_back(self, backend: Backend, now: float, what: str) -> None:
        if now - self._cap_logged.get(backend.name, -1e9) >= CAP_LOG_SECONDS:
            self._cap_logged[backend.name] = now
            log.warning(
                "backend %s %s but kept in rotation: max_ejection_percent (%g) reached",
                backend.name,
                what,
                self._cfg.max_ejection_percent,
            )

    def eject(self, backend: Backend, now: float) -> bool:
        backend.confirm_since = -1.0
        if not self.may_remove(backend, now):
            self._held_back(backend, now, "failing")
            return False
        seconds = min(
            self._cfg.eject_base_seconds * (2 ** min(backend.ejections, 16)),
            self._cfg.eject_max_seconds,
        )
        backend.ejected_until = now + seconds
        backend.returned_at = backend.ejected_until
        backend.out_since = now
        backend.ejections += 1
        backend.ejected_total += 1
        backend.consecutive_failures = 0
        backend.failed_keys.clear()
        log.warning("backend %s ejected for %.1fs", backend.name, seconds)
        return True

    def on_probe(
        self,
        backend: Backend,
        result: Probe,
        now: float,
        *,
        confirming: bool = False,
        sent_at: float | None = None,
    ) -> None:
        """A probe that times out is weak evidence: a single-threaded server busy with
        requests (llama.cpp) answers probes late. It takes two in a row, and none while
        the backend is answering real requests, to mark a backend down — unless the probe
        was sent to confirm a request's failure (``confirming``): two failures at once are
        enough. A full health probe sent after a run of 5xx answers also settles whether
        the backend is ejected for them."""
        if backend.confirm_since >= 0 and (sent_at is None or sent_at >= backend.confirm_since):
            if result is Probe.ok:
                backend.confirm_since = -1.0
                backend.consecutive_failures = 0
                backend.failed_keys.clear()
                log.info(
                    "backend %s passed its health probe: recent failures put down to requests",
                    backend.name,
                )
            else:
                self.eject(backend, now)
        if result is Probe.ok:
            if sent_at is not None and sent_at < backend.down_since:
                return  # it answered before it went down: old news
            backend.last_probe_ok = now
            backend.probe_failures = 0
            backend.refused = False
            if not backend.healthy:
                log.info("backend %s healthy again", backend.name)
                backend.returned_at = max(now, backend.ejected_until)
            backend.healthy = True
            calm_since = backend.ejected_until + self._cfg.eject_max_seconds
            if backend.ejections and now >= calm_since and backend.consecutive_failures == 0:
                # long enough without trouble: forget one step of the back-off
                backend.ejections -= 1
                backend.ejected_until = now  # the next step needs another calm period
            return
        backend.probe_failures += 1
        since_success = now - backend.last_success
        busy_but_answering = since_success < 3 * self._cfg.probe_interval or (
            backend.outstanding > 0 and since_success < BUSY_GRACE_SECONDS
        )
        if result is Probe.refused:
            self._mark_down(backend, result, now)
            backend.refused = True
        elif confirming or (backend.probe_failures >= PROBE_FAILURES and not busy_but_answering):
            if not backend.healthy:
                return
            if not self.may_remove(backend, now):
                self._held_back(backend, now, "failed its health probe")
                return
            self._mark_down(backend, result, now)

    @staticmethod
    def _mark_down(backend: Backend, result: Probe, now: float) -> None:
        if backend.healthy:
            log.warning("backend %s failed its health probe (%s)", backend.name, result.value)
            backend.down_since = backend.out_since = now
        backend.healthy = False
