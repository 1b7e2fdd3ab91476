"""A model server at a site, with the live state the router and health checks keep."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from verbund.config import BackendConfig

if TYPE_CHECKING:
    from verbund.federation._site import Site

EWMA_WEIGHT = 0.2


@dataclass(slots=True)
class EngineLoad:
    """What the engine itself reports on /metrics (vLLM, SGLang), with when it was read."""

    running: float = 0.0
    waiting: float = 0.0
    cache_usage: float = 0.0  # 0..1 of the KV cache in use
    scraped_at: float = -1e9


@dataclass(slots=True)
class LatencyStats:
    """Moving averages of what this access point observed at a backend."""

    ttft: float | None = None  # seconds to the first streamed byte
    ttft_dev: float = 0.0  # mean absolute deviation of ttft
    tpot: float | None = None  # seconds per output token
    samples: int = 0  # observations of either kind

    def observe_ttft(self, seconds: float) -> None:
        self.samples += 1
        if self.ttft is None:
            self.ttft, self.ttft_dev = seconds, seconds / 2
            return
        err = seconds - self.ttft
        self.ttft += EWMA_WEIGHT * err
        self.ttft_dev += EWMA_WEIGHT * (abs(err) - self.ttft_dev)

    def observe_tpot(self, seconds_per_token: float) -> None:
        self.samples += 1
        prev = self.tpot
        self.tpot = (
            seconds_per_token if prev is None else prev + EWMA_WEIGHT * (seconds_per_token - prev)
        )


@dataclass(eq=False, slots=True)
class Backend:
    """Runtime view of one backend. Mutated only by the proxy, health checks and scraper."""

    config: BackendConfig
    site: Site
    # announced by the site's agent, whose probes say whether it is up (``site_down``);
    # this access point only confirms it itself when requests to it fail
    announced: bool = False
    site_down: bool = False
    outstanding: int = 0
    healthy: bool = True
    consecutive_failures: int = 0
    ejected_until: float = 0.0
    ejections: int = 0
    ejected_total: int = 0
    returned_at: float = -1e9  # when it last came back from ejection or down (slow start)
    busy_until: float = 0.0  # a 429 with Retry-After: no new requests before this
    last_error: str = ""
    last_probe_ok: float = 0.0
    last_success: float = -1e9  # monotonic time of the last answered request
    last_progress: float = -1e9  # the last byte received from it, of any request
    probe_failures: int = 0
    busy_since: float = -1e9  # when outstanding last rose from zero
    down_since: float = -1e9  # when it was last marked down
    out_since: float = -1e9  # when it last left rotation (marked down or ejected)
    refused: bool = False  # down because nothing accepted a connection
    # fingerprints of the requests that failed here since the last success: the same
    # content failing again says something about the request, not about the backend
    failed_keys: set[bytes] = field(default_factory=set)
    confirm_since: float = -1.0  # >= 0: enough failures to eject, awaiting a probe's verdict
    served: int = 0
    failures: int = 0
    latency: LatencyStats = field(default_factory=LatencyStats)
    engine: EngineLoad = field(default_factory=EngineLoad)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def ttft_ewma(self) -> float | None:
        return self.latency.ttft

    def serves(self, model: str) -> bool:
        return model in self.config.models

    def stalled(self, now: float, floor: float) -> bool:
        """Requests are in flight but nothing has come back for a while: a hung server.

        The bound is ``floor`` or three times the usual time to first token, whichever is
        longer. Busy servers making progress send bytes; a stalled one (SIGSTOP, a
        partition) sends none.
        """
        if self.outstanding <= 0 or self.busy_since < 0:
            return False
        bound = max(floor, 3 * (self.latency.ttft or 0.0))
        return now - max(self.last_progress, self.busy_since) > bound

    def claim(self, now: float | None = None) -> InFlight:
        """Count one request in flight here until the returned claim is released."""
        return InFlight(self, time.monotonic() if now is None else now)

    def available(self, now: float) -> bool:
        """Healthy, not ejected, not asked to back off: may receive new requests."""
        return self.healthy and now >= self.ejected_until and now >= self.busy_until


class InFlight:
    """One request's claim on a backend's capacity (``Backend.outstanding``).

    Released exactly once: by leaving its ``with`` block, or by :meth:`release` from
    whoever it was handed to. A streamed answer outlives the attempt that opened it, so
    the attempt hands its claim on (:meth:`hand_over`) and the stream's relay releases it
    when the last byte is out. Nobody writes ``outstanding += 1`` by hand.
    """

    __slots__ = ("_held", "backend")

    def __init__(self, backend: Backend, now: float) -> None:
        if backend.outstanding == 0:
            backend.busy_since = now
        backend.outstanding += 1
        self.backend = backend
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        if self._held:
            self._held = False
            self.backend.outstanding -= 1

    def hand_over(self) -> InFlight:
        """A new owner of the same claim; this one no longer releases it."""
        new = object.__new__(InFlight)
        new.backend, new._held = self.backend, self._held
        self._held = False
        return new

    def __enter__(self) -> InFlight:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
