"""The agent's on-demand manager with a fake launcher and a fake clock: a report with
waiting requests starts an instance, it is announced once healthy, idle drains and stops
it, a vanished job is replaced, node time and the audit trail are kept."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from verbund.agent._launch_spec import LaunchSpec
from verbund.agent._launcher import Observed, squeue_verdict
from verbund.agent._ondemand import OnDemand
from verbund.store import AuditRow, Store


class FakeLauncher:
    kind = "slurm"

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}  # handle -> queued | running | gone
        self.cancelled: list[str] = []

    async def submit(self, spec: LaunchSpec, instance: str, folder: Path) -> str:
        handle = str(100 + len(self.jobs))
        self.jobs[handle] = "queued"
        return handle

    async def observe(self, handle: str, folder: Path) -> Observed:
        state = self.jobs[handle]
        endpoint = f"http://node:{handle}" if state == "running" else None
        detail = {"gone": "CANCELLED", "unknown": "squeue failed"}.get(state, "")
        return Observed(state, endpoint, detail)  # type: ignore[arg-type]

    async def cancel(self, handle: str) -> None:
        self.cancelled.append(handle)
        self.jobs[handle] = "gone"

    def adopt(self, handle: str, folder: Path) -> None:
        self.jobs.setdefault(handle, "gone")  # a job this launcher never saw has ended


@pytest.fixture
async def od(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[OnDemand, FakeLauncher, list[float]]]:
    now = [1000.0]
    launcher = FakeLauncher()
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'site.db'}")
    await store.migrate()
    spec = LaunchSpec(model="m", launcher="slurm", cpus=2, gpus=1, idle_timeout=60)
    changes: list[int] = []
    manager = OnDemand(
        [spec], tmp_path, lambda: changes.append(1), clock=lambda: now[0],
        launchers={"slurm": launcher}, store=store,
    )  # fmt: skip

    async def healthy(i: object) -> bool:
        return True

    monkeypatch.setattr(manager, "_healthy", healthy)
    yield manager, launcher, now
    await manager.aclose()
    await store.aclose()


async def test_waiting_starts_an_instance_that_is_announced_once_ready(
    od: tuple[OnDemand, FakeLauncher, list[float]], tmp_path: Path
) -> None:
    manager, launcher, now = od
    await manager.tick()
    assert launcher.jobs == {} and manager.status("m") == "stopped"
    manager.report("m", "ap-west", waiting=1, in_flight={}, idle_seconds=0)
    await manager.tick()
    assert list(launcher.jobs.values()) == ["queued"] and manager.status("m") == "starting"
    assert manager.ready() == []
    launcher.jobs["100"] = "running"
    now[0] += 10
    await manager.tick()
    assert manager.status("m") == "ready"
    (inst,) = manager.ready()
    assert inst.endpoint == "http://node:100" and inst.backend.startswith("m:")
    # idle: drained (no longer announced), then stopped, its job cancelled
    manager.report("m", "ap-west", waiting=0, in_flight={}, idle_seconds=0)
    now[0] += 61
    await manager.tick()
    assert manager.ready() == [] and launcher.cancelled == []  # draining
    await manager.tick()
    assert launcher.cancelled == ["100"] and manager.status("m") == "stopped"
    node = manager.view()["m"]["node_time"]
    assert node == {"cpu_seconds": 2 * 61.0, "gpu_seconds": 61.0}
    events = [
        json.loads(line)
        for line in (tmp_path / "on-demand" / "events.jsonl").read_text().splitlines()
    ]
    assert [(e["event"], e["actor"]) for e in events] == [
        ("start", "ap-west"), ("ready", "agent"), ("stop", "agent")
    ]  # fmt: skip
    async with manager._audit[1]._store.session() as s:  # type: ignore[index]
        rows = (await s.execute(select(AuditRow).order_by(AuditRow.seq))).scalars().all()
    assert [(r.action, r.actor) for r in rows] == [
        ("on_demand.start", "ap-west"), ("on_demand.stop", "agent")
    ]  # fmt: skip


async def test_a_vanished_job_is_replaced_while_in_use(
    od: tuple[OnDemand, FakeLauncher, list[float]],
) -> None:
    manager, launcher, now = od
    manager.report("m", "ap", waiting=1, in_flight={}, idle_seconds=0)
    await manager.tick()
    launcher.jobs["100"] = "running"
    await manager.tick()
    (inst,) = manager.ready()
    manager.report("m", "ap", waiting=0, in_flight={inst.backend: 2}, idle_seconds=0)
    launcher.jobs["100"] = "gone"  # scancel, preemption, node failure
    now[0] += 1
    await manager.tick()
    assert "101" in launcher.jobs  # its replacement
    states = {i["job"]: i["state"] for i in manager.view()["m"]["instances"]}
    assert states == {"100": "stopped", "101": "queued"}


async def test_old_reports_do_not_keep_a_model_busy(
    od: tuple[OnDemand, FakeLauncher, list[float]],
) -> None:
    manager, launcher, now = od
    manager.report("m", "ap", waiting=1, in_flight={}, idle_seconds=0)
    now[0] += 30  # the access point went away before the first tick
    await manager.tick()
    assert launcher.jobs == {}


def test_squeue_failing_is_not_a_lost_job() -> None:
    assert squeue_verdict(0, "RUNNING\n", "").state == "running"
    assert squeue_verdict(0, "PENDING\n", "").state == "queued"
    assert squeue_verdict(0, "", "").state == "gone"  # ended: no longer listed
    assert squeue_verdict(0, "COMPLETING\n", "").state == "gone"  # cancelled, ending
    gone = squeue_verdict(1, "", "slurm_load_jobs error: Invalid job id specified\n")
    assert gone.state == "gone"
    down = squeue_verdict(
        1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
    )
    assert down.state == "unknown" and "controller" in down.detail


async def test_an_instance_the_scheduler_cannot_be_asked_about_is_kept(
    od: tuple[OnDemand, FakeLauncher, list[float]],
) -> None:
    manager, launcher, now = od
    manager.report("m", "ap", waiting=1, in_flight={}, idle_seconds=0)
    await manager.tick()
    launcher.jobs["100"] = "running"
    await manager.tick()
    (inst,) = manager.ready()
    manager.report("m", "ap", waiting=0, in_flight={inst.backend: 1}, idle_seconds=0)
    launcher.jobs["100"] = "unknown"  # squeue fails (controller busy)
    now[0] += 1
    await manager.tick()
    await manager.tick()
    assert manager.ready() == [inst] and list(launcher.jobs) == ["100"]  # kept, no duplicate
    assert launcher.cancelled == [] and inst.detail
    launcher.jobs["100"] = "running"  # asked again: still there
    await manager.tick()
    assert manager.ready() == [inst] and inst.detail == ""


async def test_a_restarted_agent_takes_its_instances_over(tmp_path: Path) -> None:
    now = [1000.0]
    launcher = FakeLauncher()
    spec = LaunchSpec(model="m", launcher="slurm", cpus=2, idle_timeout=60)

    def manager(clock_offset: float) -> OnDemand:
        od = OnDemand(
            [spec], tmp_path, lambda: None, clock=lambda: now[0] + clock_offset,
            launchers={"slurm": launcher},
        )  # fmt: skip

        async def healthy(i: object) -> bool:
            return True

        od._healthy = healthy  # type: ignore[method-assign]
        return od

    first = manager(0.0)
    first.report("m", "ap", waiting=1, in_flight={}, idle_seconds=0)
    await first.tick()
    launcher.jobs["100"] = "running"
    await first.tick()
    (inst,) = first.ready()
    now[0] += 30
    first.report("m", "ap", waiting=0, in_flight={}, idle_seconds=0)  # last request: now
    await first.tick()
    await first.aclose()
    assert launcher.cancelled == []  # it keeps running for the next run
    # the next run: another monotonic clock; no report from the access point yet
    second = manager(-5000.0)
    await second.load()
    await second.tick()
    (again,) = second.ready()
    assert (again.id, again.handle, again.endpoint) == (inst.id, "100", inst.endpoint)
    assert list(launcher.jobs) == ["100"]  # no second start
    now[0] += 30  # 30 s after the last request: not idle yet
    await second.tick()
    assert second.ready() == [again]
    now[0] += 31  # the idle timeout, counted from the last request before the restart
    await second.tick()
    await second.tick()
    assert launcher.cancelled == ["100"] and second.status("m") == "stopped"
    held = second.view()["m"]["node_time"]["cpu_seconds"]
    assert held == pytest.approx(2 * 91.0, abs=1)  # the time before the restart counts too
    hours = second.node_time_buckets()
    assert sum(b["cpu_seconds"] for b in hours) == pytest.approx(2 * 91.0, abs=1)
    await second.aclose()


async def test_an_instance_that_ended_while_the_agent_was_away_is_replaced(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    launcher = FakeLauncher()
    spec = LaunchSpec(model="m", launcher="slurm", idle_timeout=60)
    first = OnDemand([spec], tmp_path, lambda: None, clock=lambda: now[0],
                     launchers={"slurm": launcher})  # fmt: skip
    first.report("m", "ap", waiting=1, in_flight={}, idle_seconds=0)
    await first.tick()
    launcher.jobs["100"] = "running"
    await first.aclose()
    launcher.jobs["100"] = "gone"  # its time limit ended meanwhile
    second = OnDemand([spec], tmp_path, lambda: None, clock=lambda: now[0],
                      launchers={"slurm": launcher})  # fmt: skip
    await second.load()
    second.report("m", "ap", waiting=1, in_flight={}, idle_seconds=0)
    await second.tick()
    states = {i["job"]: i["state"] for i in second.view()["m"]["instances"]}
    assert states == {"100": "stopped", "101": "queued"}
    await second.aclose()


async def test_a_local_engine_outlives_the_agent_and_is_adopted(tmp_path: Path) -> None:
    """A real process started as the local launcher starts engines: the next launcher
    (a restarted agent) sees it running and ends it; a process that is not the
    instance's (its number reused) is never taken for it."""
    import sys

    from verbund.agent._launcher import LocalLauncher, _spawn

    folder = tmp_path / "inst"
    proc = _spawn([sys.executable, "-c", "import time; time.sleep(120)"], folder)
    try:
        later = LocalLauncher()
        later.adopt(str(proc.pid), folder)
        assert (await later.observe(str(proc.pid), folder)).state == "running"
        stranger = LocalLauncher()
        stranger.adopt(str(proc.pid), tmp_path / "another")
        assert (await stranger.observe(str(proc.pid), tmp_path / "another")).state == "gone"
        await later.cancel(str(proc.pid))
        assert proc.wait(10) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
