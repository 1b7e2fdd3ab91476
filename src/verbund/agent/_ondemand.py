"""The agent's on-demand models: their instances, carried through their lifecycle.

:class:`OnDemand` holds each on-demand model's instances and, every tick, observes them
through their launcher (job queued, running, gone), waits for a running engine's health
(``GET /v1/models``) before it counts as ``ready``, and carries out what
:func:`~verbund.agent._scaling.decide` answers. Ready instances are announced in the
catalogue as backends, so access points route to them like any other backend; a draining
one leaves the catalogue at once and stops when the access points report nothing in
flight there.

Demand comes from the access points (``POST /on-demand/{model}``): requests waiting for
an instance, requests in flight per instance, and how long ago the model last had a
request. A report older than :data:`REPORT_TTL` no longer counts as load (an access
point that went away does not keep a model running).

Every start and stop is written to ``on-demand/events.jsonl`` under the state folder
with who or what caused it, and the node time each instance held (CPU and GPU seconds
from its job's start to its end, idle included) is added up per model and hour
(:class:`~verbund.agent._node_time.NodeTime`, read by the access points).

What outlives the agent is kept in ``on-demand/state.json``: the instances that run,
the node time, each model's last request. A restarted agent takes its instances over
(:meth:`OnDemand.load`): one whose job or process still runs is observed and routed
again without a second start, and its idle timeout still counts from the last request;
one that ended meanwhile is recorded as stopped (and replaced if demand remains). An
agent that stops leaves its instances running for the next one (``keep_on_stop``), or
stops them (the embedded demo).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from verbund.agent._instance import Instance, from_record, to_record
from verbund.agent._launch_spec import LaunchSpec
from verbund.agent._launcher import Launcher, make_launcher
from verbund.agent._node_time import NodeTime
from verbund.agent._scaling import (
    Demand,
    InstanceState,
    InstanceView,
    decide,
    model_status,
)
from verbund.audit import AuditLog
from verbund.errors import RunnerError
from verbund.store import STORE_FAILURES, Store

__all__ = ["Instance", "OnDemand"]

log = logging.getLogger("verbund.agent.ondemand")

TICK_SECONDS = 0.5
REPORT_TTL = 5.0  # seconds a demand report counts
SETTLE_SECONDS = 0.5  # a report this long after a drain began has seen it
DRAIN_MOST = 120.0  # a draining instance stops after this even if reports say busy
DEFAULT_START_SECONDS = 30.0  # expected start time before any start was observed


@dataclass
class _Model:
    spec: LaunchSpec
    launcher: Launcher
    instances: dict[str, Instance] = field(default_factory=dict)
    # access point -> (reported at, waiting, in flight per backend, last request at)
    reports: dict[str, tuple[float, int, dict[str, int], float]] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # of stopped instances; live ones are added on reading
    gpu_seconds: float = 0.0
    starts: list[float] = field(default_factory=list)  # seconds from submit to ready
    asker: str = "agent"  # the last access point that reported waiting requests


class OnDemand:
    def __init__(
        self,
        specs: list[LaunchSpec],
        state_dir: Path,
        on_change: Callable[[], object],
        *,
        clock: Callable[[], float] = time.monotonic,
        launchers: dict[str, Launcher] | None = None,
        store: Store | None = None,
        keep_on_stop: bool = True,
    ) -> None:
        self._audit = (store, AuditLog(store)) if store is not None else None
        self._folder = state_dir / "on-demand"
        self._keep_on_stop = keep_on_stop
        self.node_time = NodeTime()
        self._saved = ""
        self._on_change = on_change
        self._clock = clock
        self._launchers = launchers or {}
        self.models: dict[str, _Model] = {}
        self._wake = asyncio.Event()
        self._http = httpx.AsyncClient(timeout=2.0)
        self.update(specs)

    def update(self, specs: list[LaunchSpec]) -> None:
        """A reloaded site.toml: new specs apply to instances started from now on."""
        for spec in specs:
            m = self.models.get(spec.model)
            if m is None:
                launcher = self._launchers.get(spec.launcher) or make_launcher(spec)
                self.models[spec.model] = _Model(spec, launcher)
            else:
                m.spec = spec
        # a model no longer on demand: its instances drain (reports keep them until idle)
        for name, m in self.models.items():
            if name not in {s.model for s in specs}:
                m.spec = m.spec.model_copy(update={"min_instances": 0, "idle_timeout": 1e-9})

    # -- what others read -------------------------------------------------------------------

    def status(self, model: str) -> str:
        m = self.models[model]
        return model_status([i.state for i in m.instances.values()])

    def expected_start(self, model: str) -> float:
        starts = self.models[model].starts[-5:]
        return sum(starts) / len(starts) if starts else DEFAULT_START_SECONDS

    def ready(self) -> list[Instance]:
        return [
            i
            for m in self.models.values()
            for i in m.instances.values()
            if i.state == InstanceState.ready and i.endpoint
        ]

    def relayed(self, backend: str) -> Instance | None:
        """The instance the relay may pass requests to under ``backend``: ready, or
        draining (requests routed before the drain still arrive), with an endpoint."""
        model = self.instance_name(backend)
        i = self.models[model].instances.get(backend.rsplit(":", 1)[1]) if model else None
        if i is None or not i.endpoint:
            return None
        return i if i.state in (InstanceState.ready, InstanceState.draining) else None

    def running(self) -> set[str]:
        """The backend names of instances not stopped (the relay keeps their clients)."""
        return {
            i.backend
            for m in self.models.values()
            for i in m.instances.values()
            if i.state != InstanceState.stopped
        }

    def instance_name(self, backend: str) -> str:
        """The on-demand model whose instance ``backend`` names (``model:id``), or ""."""
        model, _, iid = backend.rpartition(":")
        return model if model in self.models and iid else ""

    def _wall(self, at: float) -> float:
        """A time of this run's clock as wall-clock seconds."""
        return time.time() - (self._clock() - at)

    def node_time_buckets(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Node time per model and hour since ``since`` (wall clock), running instances'
        up to now: what ``GET /on-demand/node-time`` answers the access points."""
        now = time.time()
        live = [
            (i.model, self._wall(i.running_at), now, i.cpus, i.gpus)
            for m in self.models.values()
            for i in m.instances.values()
            if i.running_at is not None and i.stopped_at is None
        ]
        return self.node_time.buckets(live, since)

    def view(self) -> dict[str, Any]:
        now = self._clock()
        out: dict[str, Any] = {}
        for name, m in self.models.items():
            live = [i for i in m.instances.values() if i.stopped_at is None]
            out[name] = {
                "status": self.status(name),
                "instances": [i.view(now) for i in m.instances.values()],
                "node_time": {
                    "cpu_seconds": round(
                        m.cpu_seconds + sum(i.held_seconds(now) * i.cpus for i in live), 3
                    ),
                    "gpu_seconds": round(
                        m.gpu_seconds + sum(i.held_seconds(now) * i.gpus for i in live), 3
                    ),
                },
                "expected_start_seconds": round(self.expected_start(name), 3),
            }
        return out

    # -- demand -----------------------------------------------------------------------------

    def report(
        self,
        model: str,
        caller: str,
        waiting: int,
        in_flight: dict[str, int],
        idle_seconds: float | None,
    ) -> None:
        m = self.models[model]
        now = self._clock()
        last = now - idle_seconds if idle_seconds is not None else -float("inf")
        previous = m.reports.get(caller)
        if previous is not None:
            last = max(last, previous[3])
        m.reports[caller] = (now, waiting, dict(in_flight), last)
        if waiting:
            m.asker = caller
            self._wake.set()

    def _demand(self, m: _Model, now: float) -> tuple[Demand, dict[str, int]]:
        waiting = 0
        per_backend: dict[str, int] = {}
        last = -float("inf")
        for at, w, flight, last_request in m.reports.values():
            last = max(last, last_request)
            if now - at > REPORT_TTL:
                continue
            waiting += w
            for b, n in flight.items():
                per_backend[b] = per_backend.get(b, 0) + n
        serving = {i.backend for i in m.instances.values() if i.state != InstanceState.draining}
        in_flight = sum(n for b, n in per_backend.items() if b in serving)
        return Demand(waiting, in_flight, last), per_backend

    def _unsettled(self, m: _Model, i: Instance, now: float) -> int:
        """1 while a draining instance has no report from after its drain: an access point
        may have routed to it just before the catalogue without it reached it."""
        if i.state != InstanceState.draining or i.drain_at is None:
            return 0
        fresh = [at for at, *_ in m.reports.values() if now - at <= REPORT_TTL]
        return int(any(at < i.drain_at + SETTLE_SECONDS for at in fresh))

    # -- the lifecycle ----------------------------------------------------------------------

    async def tick(self) -> None:
        changed = False
        for name, m in self.models.items():
            changed |= await self._observe(m)
            now = self._clock()
            demand, per_backend = self._demand(m, now)
            views = [
                InstanceView(
                    i.id,
                    i.state,
                    i.submitted_at,
                    i.running_at,
                    i.ends_at,
                    per_backend.get(i.backend, 0) or self._unsettled(m, i, now),
                )
                for i in m.instances.values()
            ]
            for i in m.instances.values():  # a drain that the reports never end
                if i.state == InstanceState.draining and now - (i.drain_at or now) > DRAIN_MOST:
                    views = [v for v in views if v.id != i.id]
                    await self._stop(m, i, "drain bound reached")
                    changed = True
            for action in decide(m.spec, views, demand, now):
                changed = True
                if action.kind == "start":
                    await self._start(name, m, action.reason)
                    continue
                inst = m.instances[action.instance]
                if action.kind == "drain":
                    inst.state, inst.drain_at = InstanceState.draining, now
                    log.info("%s: instance %s draining (%s)", name, inst.id, action.reason)
                else:  # stop or cancel
                    await self._stop(m, inst, action.reason)
            # forget stopped instances after a while (their time is in the totals)
            for iid in [
                i.id for i in m.instances.values()
                if i.stopped_at is not None and now - i.stopped_at > 600
            ]:  # fmt: skip
                del m.instances[iid]
        if changed:
            self._on_change()
        await self._save()

    async def _observe(self, m: _Model) -> bool:
        changed = False
        for i in list(m.instances.values()):
            if i.state == InstanceState.stopped:
                continue
            seen = await i.launcher.observe(i.handle, i.folder)
            now = self._clock()
            if seen.state == "unknown":  # the scheduler could not be asked: ask again
                if seen.detail != i.detail:
                    log.warning("%s: instance %s unobservable: %s", m.spec.model, i.id, seen.detail)
                i.detail = seen.detail
                continue
            if seen.state == "gone":
                was = i.state
                i.detail = seen.detail
                await self._stop(m, i, f"its job ended ({seen.detail})", cancel=False)
                if was != InstanceState.draining:
                    log.warning("%s: instance %s vanished while %s", m.spec.model, i.id, was)
                changed = True
                continue
            i.detail = ""  # observed again
            if seen.state == "running" and i.running_at is None:
                i.running_at = now
                i.ends_at = now + m.spec.time_limit_minutes * 60
            if i.state == InstanceState.queued and seen.state == "running":
                i.state = InstanceState.loading
                changed = True
            i.endpoint = seen.endpoint or i.endpoint
            if i.state == InstanceState.loading and i.endpoint and await self._healthy(i):
                i.state, i.ready_at = InstanceState.ready, self._clock()
                if not i.adopted:  # an adopted one's start was long ago
                    m.starts.append(i.ready_at - i.submitted_at)
                await self._event("ready", m.spec.model, i, "adopted" if i.adopted else "", "agent")
                log.info("%s: instance %s ready at %s", m.spec.model, i.id, i.endpoint)
                changed = True
        return changed

    async def _healthy(self, i: Instance) -> bool:
        try:
            resp = await self._http.get(f"{i.endpoint}/v1/models")
        except httpx.HTTPError:
            return False
        return resp.status_code == 200

    async def _start(self, name: str, m: _Model, reason: str) -> None:
        iid = uuid.uuid4().hex[:8]
        folder = self._folder / name / iid
        inst = Instance(
            iid, name, folder, m.launcher, m.spec.cpus, m.spec.gpus, self._clock(), reason
        )
        try:
            inst.handle = await m.launcher.submit(m.spec, iid, folder)
        except (OSError, RunnerError) as exc:
            log.error("%s: cannot start an instance: %s", name, exc)
            return
        m.instances[iid] = inst
        actor = m.asker if reason == "cold start" else "agent"
        await self._event("start", name, inst, reason, actor)
        log.info("%s: instance %s submitted (%s, %s)", name, iid, m.launcher.kind, reason)

    async def _stop(self, m: _Model, i: Instance, reason: str, cancel: bool = True) -> None:
        if cancel and i.handle:
            await i.launcher.cancel(i.handle)
        i.state, i.stopped_at = InstanceState.stopped, self._clock()
        held = i.held_seconds(i.stopped_at)
        m.cpu_seconds += held * i.cpus
        m.gpu_seconds += held * i.gpus
        if i.running_at is not None:
            end = time.time()
            self.node_time.add(m.spec.model, end - held, end, i.cpus, i.gpus)
        await self._event("stop", m.spec.model, i, reason, "agent")
        log.info("%s: instance %s stopped (%s)", m.spec.model, i.id, reason)

    async def _event(self, what: str, model: str, i: Instance, reason: str, actor: str) -> None:
        """Who or what started and stopped what: the agent's audit chain (when it has a
        store) and ``events.jsonl`` with the node time held (for reports and billing)."""
        line = {
            "at": time.time(), "event": what, "model": model, "instance": i.id,
            "actor": actor, "launcher": i.launcher.kind, "job": i.handle, "reason": reason,
            "cpu_seconds": round(i.held_seconds(self._clock()) * i.cpus, 3),
            "gpu_seconds": round(i.held_seconds(self._clock()) * i.gpus, 3),
        }  # fmt: skip
        await asyncio.to_thread(self._append, line)
        if self._audit is None or what == "ready":
            return
        store, audit = self._audit
        try:
            async with store.session() as s, s.begin():
                await audit.append(
                    s, actor=actor, action=f"on_demand.{what}", target=i.backend,
                    after={
                        k: line[k]
                        for k in ("model", "job", "reason", "cpu_seconds", "gpu_seconds")
                    },
                )  # fmt: skip
        except STORE_FAILURES as exc:
            log.warning("on-demand %s of %s not audited: %s", what, i.backend, type(exc).__name__)

    def _append(self, line: dict[str, Any]) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        with (self._folder / "events.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # one bad tick must not end the lifecycle of every model
                log.exception("on-demand tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_SECONDS)
            self._wake.clear()

    # -- what outlives the agent --------------------------------------------------------------

    def _state(self) -> str:
        now = self._clock()
        return json.dumps(
            {
                "instances": [
                    to_record(i, self._clock)
                    for m in self.models.values()
                    for i in m.instances.values()
                    if i.state != InstanceState.stopped
                ],
                "node_time": self.node_time.dump(),
                "totals": {n: [m.cpu_seconds, m.gpu_seconds] for n, m in self.models.items()},
                "last_request": {
                    n: round(self._wall(last), 1)
                    for n, m in self.models.items()
                    if math.isfinite(last := self._demand(m, now)[0].last_request_at)
                },
            },
            sort_keys=True,
        )

    async def _save(self) -> None:
        state = self._state()
        if state != self._saved:
            await asyncio.to_thread(self._write, state)
            self._saved = state

    def _write(self, state: str) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        tmp = self._folder / "state.json.tmp"
        tmp.write_text(state)
        tmp.replace(self._folder / "state.json")

    async def load(self) -> None:
        """Take over what an earlier run of the agent left: its instances (observed again
        at the next tick), node time and each model's last request."""
        try:
            data = json.loads((self._folder / "state.json").read_text())
        except (OSError, ValueError):
            return
        if not isinstance(data, dict):
            return
        self.node_time.load(data.get("node_time"))
        now, wall = self._clock(), time.time()
        for name, totals in (data.get("totals") or {}).items():
            if name in self.models and isinstance(totals, list) and len(totals) == 2:
                self.models[name].cpu_seconds, self.models[name].gpu_seconds = map(float, totals)
        for name, at in (data.get("last_request") or {}).items():
            if name in self.models and isinstance(at, int | float):
                # counts for idleness only, never as load
                self.models[name].reports["(before the restart)"] = (
                    now - REPORT_TTL - 1, 0, {}, now - (wall - at)
                )  # fmt: skip
        for rec in data.get("instances") or []:
            m = self.models.get(str(rec.get("model"))) if isinstance(rec, dict) else None
            inst = from_record(rec, m.launcher, self._clock) if m is not None else None
            if m is None or inst is None:
                log.warning("on-demand: an instance of the last run cannot be taken over: %s", rec)
                continue
            m.launcher.adopt(inst.handle, inst.folder)
            m.instances[inst.id] = inst
            await self._event("adopt", m.spec.model, inst, "agent restarted", "agent")
            log.info("%s: instance %s (%s) taken over", m.spec.model, inst.id, inst.handle)
        self._saved = self._state()

    async def aclose(self) -> None:
        """The agent stops: its instances keep running for the next run to take over
        (``keep_on_stop``), or stop with it; either way nothing runs unaccounted."""
        for m in self.models.values():
            for i in m.instances.values():
                if i.state != InstanceState.stopped and not self._keep_on_stop:
                    await self._stop(m, i, "agent stopped")
        await self._save()
        await self._http.aclose()
