"""Access point overhead: Verbund next to nginx (the floor) and LiteLLM (the usual peer).

One command sets everything up and measures, interleaved in one run:

- ``direct``  : the mock backend itself: nginx answering a fixed chat completion, or a
  fixed stream of 20 content chunks plus a usage chunk (under ``/s/``);
- ``nginx``   : an nginx reverse proxy with upstream keep-alive in front of it;
- ``litellm`` : LiteLLM proxy (``.venv-litellm/``), no database, access log off, its
  master key as the only key;
- ``verbund`` : ``verbund gateway`` with one site, a key made through the admin API,
  policy, routing and usage accounting on.

Open-loop load at fixed rates (latency counted from each request's scheduled send time),
then a closed-loop throughput probe; optionally a py-spy profile of Verbund under load and
a soak run. Results: ``benchmarks/results/overhead.md`` and ``.json``.

    ./scripts/bench-overhead            # full run, about 10 minutes
    ./scripts/bench-overhead --quick    # about 3 minutes
    ./scripts/bench-overhead --soak 600 # add a 10-minute soak of Verbund at 200 req/s
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from benchmarks.overhead import procs, profile, servers
from benchmarks.overhead.loadgen import GeneratorPool, Job, Result
from benchmarks.overhead.servers import ROOT, Target

RESULTS = ROOT / "benchmarks" / "results"
MB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    duration: float
    rates: tuple[int, ...]
    stream_rates: tuple[int, ...]
    closed_duration: float
    concurrency: int
    gen_procs: int
    workers: int
    targets: tuple[str, ...]
    profile_seconds: int
    profile_rate: int
    soak: int
    soak_rate: int
    closed: bool
    sweep: tuple[int, ...]
    out: Path


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 s per step, no profile (~3 min)")
    p.add_argument("--duration", type=float, help="seconds per open-loop step (default 10)")
    p.add_argument("--rates", default="100,200,500,1000", help="non-streaming requests/s")
    p.add_argument("--stream-rates", default="50,200", help="streams/s")
    p.add_argument("--concurrency", type=int, default=64, help="closed-loop connections")
    p.add_argument("--gen-procs", type=int, default=2, help="load generator processes")
    p.add_argument("--workers", type=int, default=2, help="workers of LiteLLM, Verbund, nginx")
    p.add_argument("--targets", default="direct,nginx,litellm,verbund")
    p.add_argument(
        "--profile",
        type=int,
        default=None,
        metavar="S",
        help="py-spy profile of Verbund, S s per mode (default 15; 0 = off; quick: off)",
    )
    p.add_argument(
        "--profile-rate",
        type=int,
        default=60,
        metavar="R",
        help="requests/s while profiling (streams: half); capped at 40 %% of the closed-loop "
        "maximum when that was measured",
    )
    p.add_argument("--no-closed", action="store_true", help="skip the closed-loop probe")
    p.add_argument(
        "--sweep",
        default=None,
        metavar="C,C,...",
        help="closed loop of litellm and verbund at these concurrencies "
        "(default 1,4,16,64,256; quick: off)",
    )
    p.add_argument("--soak", type=int, default=0, metavar="S", help="soak Verbund for S s")
    p.add_argument("--soak-rate", type=int, default=200, help="requests/s during the soak")
    p.add_argument("--out", type=Path, default=RESULTS / "overhead", help="results path stem")
    a = p.parse_args(argv)
    duration = a.duration or (3.0 if a.quick else 10.0)
    prof = a.profile if a.profile is not None else (0 if a.quick else 15)
    targets = tuple(t.strip() for t in a.targets.split(",") if t.strip())
    if "direct" not in targets:
        targets = ("direct", *targets)
    return Settings(
        duration=duration,
        rates=tuple(int(x) for x in a.rates.split(",") if x),
        stream_rates=tuple(int(x) for x in a.stream_rates.split(",") if x),
        closed_duration=3.0 if a.quick else 6.0,
        concurrency=a.concurrency,
        gen_procs=a.gen_procs,
        workers=a.workers,
        targets=targets,
        profile_seconds=prof,
        profile_rate=a.profile_rate,
        soak=a.soak,
        soak_rate=a.soak_rate,
        closed=not a.no_closed,
        sweep=tuple(
            int(x)
            for x in (
                a.sweep if a.sweep is not None else ("" if a.quick else "1,4,16,64,256")
            ).split(",")
            if x
        ),
        out=a.out,
    )


# ---------------------------------------------------------------- statistics


def pct(values: Any, q: float) -> float | None:
    if not len(values):
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def row(
    target: Target, mode: str, rate: float, res: Result, meter: procs.Meter, job: Job
) -> dict[str, Any]:
    elapsed = max(res.elapsed, job.duration)
    return {
        "target": target.name,
        "mode": mode,
        "rate": rate,
        "sent": res.sent,
        "ok": res.ok,
        "errors": sum(res.errors.values()),
        "error_kinds": res.errors,
        "achieved": round(res.ok / elapsed, 1),
        "p50_ms": pct(res.latency, 0.50),
        "p90_ms": pct(res.latency, 0.90),
        "p99_ms": pct(res.latency, 0.99),
        "max_ms": pct(res.latency, 1.0),
        "service_p50_ms": pct(res.service, 0.50),
        "service_p99_ms": pct(res.service, 0.99),
        "ttfb_p50_ms": pct(res.ttfb, 0.50),
        "ttfb_p99_ms": pct(res.ttfb, 0.99),
        "cpu_s": round(meter.cpu, 3),
        "cpu_s_per_1k": round(meter.cpu / max(res.ok, 1) * 1000, 3),
        "peak_rss_mb": round(meter.peak_rss / MB, 1),
        "gen_cpu_s_per_1k": round(res.cpu / max(res.sent, 1) * 1000, 3),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def saturated(r: dict[str, Any]) -> bool:
    return r["errors"] > 0.01 * max(r["sent"], 1) or r["achieved"] < 0.9 * r["rate"]


# ---------------------------------------------------------------- measuring


class Bench:
    def __init__(self, s: Settings, workdir: Path) -> None:
        self.s = s
        self.workdir = workdir
        self.targets: dict[str, Target] = {}
        self.mock: Target | None = None
        self.pool: GeneratorPool | None = None
        self.rows: list[dict[str, Any]] = []
        self.closed: list[dict[str, Any]] = []
        self.swept: list[dict[str, Any]] = []
        self.versions: dict[str, str] = {}

    # set-up
    def start(self) -> None:
        nginx = servers.ensure_nginx()
        if "litellm" in self.s.targets:
            servers.ensure_litellm()
        print(f"==> starting servers in {self.workdir}", flush=True)
        self.mock = servers.start_mock(nginx, self.workdir)
        backend = self.mock.port
        self.targets["direct"] = self.mock
        for name in self.s.targets:
            if name == "nginx":
                self.targets[name] = servers.start_nginx_proxy(
                    nginx, self.workdir, backend, self.s.workers
                )
            elif name == "litellm":
                self.targets[name] = servers.start_litellm(self.workdir, backend, self.s.workers)
            elif name == "verbund":
                self.targets[name] = servers.start_verbund(self.workdir, backend, self.s.workers)
            elif name.startswith("verbund-") and name.endswith("w"):  # e.g. verbund-1w
                self.targets[name] = servers.start_verbund(
                    self.workdir, backend, int(name[8:-1]), name
                )
            elif name != "direct":
                raise SystemExit(f"unknown target {name!r}")
        self.pool = GeneratorPool(self.s.gen_procs)
        self.versions = {
            "verbund": _git_rev(),
            "nginx": servers.nginx_version(nginx),
            "litellm": self.targets["litellm"].version if "litellm" in self.targets else "-",
            "python": platform.python_version(),
            **{
                m: metadata.version(m)
                for m in ("uvicorn", "starlette", "httpx", "uvloop", "httptools", "orjson")
            },
        }
        for t in self.targets.values():  # every target answers both kinds correctly
            for stream in (False, True):  # and is warmed up (imports, caches, connections)
                res = self.pool.run(Job((t.template(stream),), (1.0,), 2.0, concurrency=8))
                if res.ok == 0 or res.errors:
                    raise RuntimeError(
                        f"{t.name} (stream={stream}) failed: {res.errors}; see {self.workdir}"
                    )

    def stop(self) -> None:
        for t in self.targets.values():
            t.stop()
        if self.pool:
            self.pool.close()

    def measure(self, t: Target, job: Job) -> tuple[Result, procs.Meter]:
        assert self.pool is not None
        with procs.Meter(t.pids) as meter:
            res = self.pool.run(job)
        if not t.alive():
            raise RuntimeError(f"{t.name} died; see {self.workdir}")
        return res, meter

    def settle(self, t: Target, hard: bool) -> None:
        """Wait until the target is idle again (it may still be working off a backlog)."""
        time.sleep(0.5)
        if not hard:
            return
        pids = [p for r in t.pids for p in procs.tree(r)]
        end = time.monotonic() + 30
        while time.monotonic() < end:
            c0 = procs.cpu_seconds(pids)
            time.sleep(0.5)
            if procs.cpu_seconds(pids) - c0 < 0.05:
                return

    def open_loop(self) -> None:
        steps = [("chat", r) for r in self.s.rates] + [("stream", r) for r in self.s.stream_rates]
        names = list(self.targets)
        given_up: set[tuple[str, str]] = set()
        for i, (mode, rate) in enumerate(steps):
            order = names[i % len(names) :] + names[: i % len(names)]
            step: dict[str, dict[str, Any]] = {}
            for name in order:
                t = self.targets[name]
                if (name, mode) in given_up:
                    step[name] = {"target": name, "mode": mode, "rate": rate, "skipped": True}
                    continue
                job = Job((t.template(mode == "stream"),), (1.0,), self.s.duration, rate=rate)
                res, meter = self.measure(t, job)
                r = row(t, mode, rate, res, meter, job)
                step[name] = r
                if saturated(r):
                    given_up.add((name, mode))
                self.settle(t, hard=saturated(r))
                print(_line(r), flush=True)
            direct = step.get("direct", {})
            for name in names:
                r = step[name]
                if not r.get("skipped") and direct.get("p50_ms") is not None:
                    for q in ("p50", "p99", "service_p50", "service_p99"):
                        a, b = r.get(f"{q}_ms"), direct.get(f"{q}_ms")
                        r[f"added_{q}_ms"] = None if a is None or b is None else a - b
                self.rows.append(r)

    def closed_loop(self) -> None:
        for mode in ("chat", "stream"):
            for name, t in self.targets.items():
                job = Job(
                    (t.template(mode == "stream"),),
                    (1.0,),
                    self.s.closed_duration,
                    concurrency=self.s.concurrency,
                )
                res, meter = self.measure(t, job)
                r = row(t, mode, 0, res, meter, job)
                r["achieved"] = round(res.ok / self.s.closed_duration, 1)
                r["concurrency"] = self.s.concurrency
                self.closed.append(r)
                print(
                    f"closed {mode:6} {name:10} {r['achieved']:>9.0f}/s  p50 "
                    f"{r['p50_ms'] or 0:.1f} ms  errors {r['errors']}",
                    flush=True,
                )
                self.settle(t, hard=True)

    def sweep(self) -> None:
        """CPU per request and throughput against the number of concurrent clients."""
        for name in ("litellm", "verbund"):
            t = self.targets.get(name)
            if t is None:
                continue
            for c in self.s.sweep:
                if name == "litellm" and c > 16:
                    continue  # minutes of time-outs, nothing new
                job = Job((t.template(False),), (1.0,), self.s.closed_duration, concurrency=c)
                res, meter = self.measure(t, job)
                r = row(t, "chat", 0, res, meter, job)
                r["achieved"] = round(res.ok / self.s.closed_duration, 1)
                r["concurrency"] = c
                self.swept.append(r)
                print(
                    f"sweep {name:8} c={c:<4} {r['achieved']:>7.0f}/s p50 "
                    f"{r['p50_ms'] or 0:.1f} ms cpu {r['cpu_s_per_1k']:.2f} ms/req",
                    flush=True,
                )
                self.settle(t, hard=True)

    def profile(self) -> dict[str, Any]:
        t = self.targets.get("verbund")
        if t is None or not self.s.profile_seconds:
            return {}
        out: dict[str, Any] = {}
        # the profile should show the cost of a request, not of a backlog: stay well below
        # what the closed-loop probe reached (the machine may be shared and busy)
        for mode, rate in (("chat", self.s.profile_rate), ("stream", self.s.profile_rate // 2)):
            peak = [
                r["achieved"] for r in self.closed if r["target"] == t.name and r["mode"] == mode
            ]
            if peak:
                rate = int(max(10, min(rate, 0.4 * peak[0])))
            raw = self.workdir / f"profile-{mode}.txt"
            spy = profile.record(t.pids[0], self.s.profile_seconds, raw)
            time.sleep(1.0)  # py-spy attaches
            job = Job((t.template(mode == "stream"),), (1.0,), self.s.profile_seconds, rate=rate)
            res, meter = self.measure(t, job)
            spy.wait(60)
            summary = profile.summarize(raw) if raw.exists() else {"error": "no profile"}
            summary["load"] = row(t, mode, rate, res, meter, job)
            out[mode] = summary
            print(f"profile {mode}: {summary.get('samples')} samples -> {raw}", flush=True)
            self.settle(t, hard=True)
        return out

    def usage_count(self, t: Target) -> int:
        r = httpx.get(
            f"http://127.0.0.1:{t.port}/admin/usage",
            params={"group_by": "institution"},
            headers={"authorization": f"Bearer {t.admin_key}"},
            timeout=30,
        )
        r.raise_for_status()
        return sum(int(x["requests"]) for x in r.json()["data"])

    def soak(self) -> dict[str, Any]:
        t = self.targets.get("verbund")
        if t is None or not self.s.soak:
            return {}
        assert self.pool is not None
        print(
            f"==> soak: verbund, {self.s.soak} s at {self.s.soak_rate}/s, 1/3 streams", flush=True
        )
        before = self._settled_usage(t)
        pids = [p for r in t.pids for p in procs.tree(r)]
        chunk = 30.0
        timeline = []
        total = Result()
        start = time.monotonic()
        rss0 = procs.rss_bytes(pids)
        cpu0 = procs.cpu_seconds(pids)
        while time.monotonic() - start < self.s.soak - 1:
            d = min(chunk, self.s.soak - (time.monotonic() - start))
            job = Job((t.template(False), t.template(True)), (2.0, 1.0), d, rate=self.s.soak_rate)
            res = self.pool.run(job, start_in=0.05)
            total.merge(res)
            timeline.append(
                {
                    "t_s": round(time.monotonic() - start),
                    "rss_mb": round(procs.rss_bytes(pids) / MB, 1),
                    "ok": res.ok,
                    "errors": sum(res.errors.values()),
                    "p99_ms": pct(res.latency, 0.99),
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
            )
            print(
                f"soak t={timeline[-1]['t_s']}s rss={timeline[-1]['rss_mb']} MB "
                f"errors={timeline[-1]['errors']} p99={timeline[-1]['p99_ms'] or 0:.1f} ms",
                flush=True,
            )
        after = self._flushed_usage(t, before + total.sent)
        rss1 = procs.rss_bytes(pids)
        # growth over the second half: the first minutes include caches filling up
        half = [x["rss_mb"] for x in timeline[len(timeline) // 2 :]]
        return {
            "seconds": self.s.soak,
            "rate": self.s.soak_rate,
            "sent": total.sent,
            "ok": total.ok,
            "errors": sum(total.errors.values()),
            "error_kinds": total.errors,
            "p50_ms": pct(total.latency, 0.5),
            "p99_ms": pct(total.latency, 0.99),
            "rss_start_mb": round(rss0 / MB, 1),
            "rss_end_mb": round(rss1 / MB, 1),
            "rss_growth_second_half_mb": round(half[-1] - half[0], 1) if len(half) > 1 else 0.0,
            "cpu_s_per_1k": round((procs.cpu_seconds(pids) - cpu0) / max(total.ok, 1) * 1000, 3),
            "usage_records": after - before,
            "timeline": timeline,
        }

    def _settled_usage(self, t: Target) -> int:
        """The store's request count once it stops changing: every worker flushes its own
        spool in the background, the admin call only the spool of the worker it reached."""
        n = self.usage_count(t)
        for _ in range(20):
            time.sleep(1.0)
            m = self.usage_count(t)
            if m == n:
                break
            n = m
        return n

    def _flushed_usage(self, t: Target, expect: int | None) -> int:
        """The store's request count; with ``expect``, wait (10 s at most) until flushed."""
        end = time.monotonic() + 10
        n = self.usage_count(t)
        while expect is not None and n < expect and time.monotonic() < end:
            time.sleep(0.5)
            n = self.usage_count(t)
        return n


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['mode']:6} {r['rate']:>5}/s {r['target']:10} achieved {r['achieved']:>7.1f}/s "
        f"p50 {_ms(r['p50_ms'])} p99 {_ms(r['p99_ms'])} errors {r['errors']} "
        f"cpu {r['cpu_s_per_1k']:.2f} s/1k"
    )


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"


def _git_rev() -> str:
    r = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (r.stdout.strip() or "?") + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
    }


# ---------------------------------------------------------------- report


def table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(h for h, _ in cols) + " |"
    sep = "|" + "|".join("---:" if i else "---" for i in range(len(cols))) + "|"
    out = [head, sep]
    for r in rows:
        cells = []
        for _, k in cols:
            v = r.get(k)
            if r.get("skipped") and k not in ("target", "rate"):
                v = "skipped" if k == "achieved" else ""
            elif isinstance(v, float) and k.endswith("_ms"):
                v = _ms(v)
            elif v is None:
                v = "-"
            cells.append(str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


OPEN_COLS = [
    ("target", "target"),
    ("rate/s", "rate"),
    ("achieved/s", "achieved"),
    ("p50 ms", "p50_ms"),
    ("p90 ms", "p90_ms"),
    ("p99 ms", "p99_ms"),
    ("added p50", "added_p50_ms"),
    ("added p99", "added_p99_ms"),
    ("errors", "errors"),
    ("CPU s/1k req", "cpu_s_per_1k"),
    ("peak RSS MB", "peak_rss_mb"),
]
SERVICE_COLS = [
    ("target", "target"),
    ("mode", "mode"),
    ("rate/s", "rate"),
    ("service p50", "service_p50_ms"),
    ("service p99", "service_p99_ms"),
    ("added p50", "added_service_p50_ms"),
    ("added p99", "added_service_p99_ms"),
    ("TTFB p50", "ttfb_p50_ms"),
    ("TTFB p99", "ttfb_p99_ms"),
    ("gen CPU s/1k", "gen_cpu_s_per_1k"),
]
CLOSED_COLS = [
    ("target", "target"),
    ("mode", "mode"),
    ("req/s", "achieved"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("errors", "errors"),
    ("CPU s/1k req", "cpu_s_per_1k"),
    ("peak RSS MB", "peak_rss_mb"),
    ("gen CPU s/1k", "gen_cpu_s_per_1k"),
]


def report(
    s: Settings,
    b: Bench,
    info: dict[str, Any],
    prof: dict[str, Any],
    soak: dict[str, Any],
    elapsed: float,
) -> str:
    v = info["versions"]
    m = info["machine"]
    lines = [
        "# Access point overhead",
        "",
        f"Date: {info['date']}. Machine: {m['nproc']} cores ({m['cpu']}), "
        f"{m['memory_gb']} GB, Linux {m['kernel']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])} (the machine is shared).",
        f"Versions: Verbund {v['verbund']}, nginx {v['nginx']}, LiteLLM {v['litellm']}, "
        f"Python {v['python']}, uvicorn {v['uvicorn']}, starlette {v['starlette']}, "
        f"httpx {v['httpx']}, uvloop {v['uvloop']}.",
        f"Command: `{info['command']}` ({elapsed / 60:.1f} min).",
        "",
        f"Set-up: mock backend = nginx, 1 worker, fixed answers; nginx proxy, LiteLLM "
        f"and Verbund with {s.workers} workers each. Verbund: one site, a real key from "
        "the admin API, policy filter, router, usage spool + SQLite flush on; LiteLLM: no "
        "database, master key, access log off. Load: open loop, "
        f"{s.duration:g} s per step, {s.gen_procs} generator processes, targets interleaved "
        "(order rotated each step). Latency is counted from the scheduled send time "
        "(no coordinated omission); it includes about 0.5-1 ms of generator timer lag "
        "that is the same for every target (see service time below). *added* = target "
        "minus direct in the same step. CPU = user+system seconds of the target's "
        "processes per 1,000 answered requests (the mock's own CPU not included). "
        "A target that fails a rate (>1 % errors or <90 % of the rate) skips higher rates.",
        "",
        "## Non-streaming chat completions (open loop)",
        "",
        table([r for r in b.rows if r["mode"] == "chat"], OPEN_COLS),
        "",
        "## Streaming chat completions (open loop; latency = until [DONE])",
        "",
        table([r for r in b.rows if r["mode"] == "stream"], OPEN_COLS),
        "",
        "## Service time (from the actual write) and time to first body byte",
        "",
        table([r for r in b.rows if not r.get("skipped")], SERVICE_COLS),
        "",
        f"## Closed loop: maximum throughput ({s.concurrency} connections, "
        f"{s.closed_duration:g} s)",
        "",
        "The load generator (Python) shares the 2 cores; the direct and nginx figures are "
        "limited by the generator, not by nginx.",
        "",
        table(b.closed, CLOSED_COLS),
        "",
    ]
    if b.swept:
        lines += [
            "## Closed loop by number of clients (non-streaming)",
            "",
            "CPU per request (ms) and throughput as concurrency grows.",
            "",
            table(
                b.swept,
                [
                    ("target", "target"),
                    ("clients", "concurrency"),
                    ("req/s", "achieved"),
                    ("p50 ms", "p50_ms"),
                    ("p99 ms", "p99_ms"),
                    ("errors", "errors"),
                    ("CPU ms/req", "cpu_s_per_1k"),
                    ("peak RSS MB", "peak_rss_mb"),
                ],
            ),
            "",
        ]
    if prof:
        lines += ["## Profile of Verbund under load (py-spy, share of CPU samples)", ""]
        for mode, p in prof.items():
            load = p.get("load", {})
            lines += [
                f"### {mode}: {load.get('rate')} req/s, {p.get('samples')} samples, "
                f"p50 {_ms(load.get('p50_ms'))} ms, CPU {load.get('cpu_s_per_1k')} s/1k req",
                "",
                "| self time by layer | % | | inclusive by function | % |",
                "|---|---:|---|---|---:|",
            ]
            a = p.get("self_by_layer", [])[:15]
            c = p.get("inclusive_by_function", [])[:15]
            for i in range(max(len(a), len(c))):
                la = a[i] if i < len(a) else ("", "")
                lc = c[i] if i < len(c) else ("", "")
                lines.append(f"| {la[0]} | {la[1]} | | `{lc[0]}` | {lc[1]} |")
            lines += ["", "Where the time goes (inclusive share of samples):", ""]
            lines += [f"- {pc} % {label}" for label, pc in p.get("breakdown", []) if pc]
            lines += ["", "Top self time by function:", ""]
            lines += [f"- {pc} % `{fn}`" for fn, pc in p.get("self_by_function", [])[:15]]
            lines.append("")
    if soak:
        lines += [
            f"## Soak: Verbund, {soak['seconds']} s at {soak['rate']} req/s (1/3 streams)",
            "",
            f"Sent {soak['sent']}, answered {soak['ok']}, errors {soak['errors']} "
            f"{soak['error_kinds'] or ''}; p50 {_ms(soak['p50_ms'])} ms, p99 "
            f"{_ms(soak['p99_ms'])} ms; RSS {soak['rss_start_mb']} -> {soak['rss_end_mb']} MB "
            f"(second half: {soak['rss_growth_second_half_mb']:+} MB); CPU "
            f"{soak['cpu_s_per_1k']} s/1k req; usage records in the store: "
            f"{soak['usage_records']} for {soak['sent']} requests.",
            "",
            "| t s | RSS MB | answered | errors | p99 ms | machine load (1 min) |",
            "|---:|---:|---:|---:|---:|---:|",
            *(
                f"| {x['t_s']} | {x['rss_mb']} | {x['ok']} | {x['errors']} "
                f"| {_ms(x['p99_ms'])} | {x.get('loadavg_1m', '-')} |"
                for x in soak["timeline"]
            ),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    s = parse_args(argv)
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="verbund-bench-overhead-"))
    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": "scripts/bench-overhead " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items()},
    }
    b = Bench(s, workdir)

    def interrupted(signum: int, frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)  # the servers are stopped on the way out
    try:
        b.start()
        info["versions"] = b.versions
        b.open_loop()
        if s.closed:
            b.closed_loop()
        b.sweep()
        prof = b.profile()
        soak = b.soak()
    finally:
        b.stop()
    elapsed = time.monotonic() - began
    md = report(s, b, info, prof, soak, elapsed)
    s.out.parent.mkdir(parents=True, exist_ok=True)
    s.out.with_suffix(".md").write_text(md + "\n")
    s.out.with_suffix(".json").write_text(
        json.dumps(
            {
                **info,
                "open_loop": b.rows,
                "closed_loop": b.closed,
                "sweep": b.swept,
                "profile": prof,
                "soak": soak,
                "elapsed_s": round(elapsed),
            },
            indent=1,
            default=str,
        )
        + "\n"
    )
    print()
    print(md)
    print(
        f"\nwritten: {s.out.with_suffix('.md')}, {s.out.with_suffix('.json')} (work dir {workdir})"
    )


if __name__ == "__main__":
    main()
