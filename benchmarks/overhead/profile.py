"""Where an access point's CPU time goes: py-spy samples, summed by function and by layer.

``py-spy record --gil --format raw`` writes one line per distinct stack,
``root;...;leaf N``, and keeps only samples in which a thread held the GIL: the Python
work of the server, without idle waits (event loop polling, the uvicorn supervisor's
ping thread, aiosqlite's queue) and without time spent waiting for the GIL. Time spent
in C code that keeps the GIL (uvloop, httptools, orjson, the socket calls) is charged to
the Python function that called it. Samples whose leaf is a known blocking wait are
dropped as well, should one slip through.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from harness.processes import Process

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# first match wins; checked against the frame's file path
LAYERS: list[tuple[str, str]] = [
    ("verbund/proxy/_sse.py", "verbund SSE filter (proxy/_sse.py)"),
    ("verbund/proxy/_relay.py", "verbund stream relay (proxy/_relay.py)"),
    ("verbund/proxy/", "verbund proxy (proxy/)"),
    ("verbund/admission/", "verbund admission (admission/)"),
    ("verbund/gateway/_overload.py", "verbund load shedding (_overload.py)"),
    ("verbund/gateway/_openai.py", "verbund route handler (_openai.py)"),
    ("verbund/gateway/_body.py", "verbund body checks (_body.py)"),
    ("verbund/gateway/_auth.py", "verbund auth (_auth.py)"),
    ("verbund/gateway/_app.py", "verbund middleware (_app.py)"),
    ("verbund/gateway/_deps.py", "verbund route dependencies (_deps.py)"),
    ("verbund/accounting/", "verbund usage spool (accounting/)"),
    ("verbund/routing/", "verbund router (routing/)"),
    ("verbund/policy.py", "verbund policy (policy.py)"),
    ("verbund/tenancy/", "verbund keys (tenancy/)"),
    ("verbund/federation/", "verbund federation (health, upstream)"),
    ("verbund/", "verbund (other)"),
    ("httpcore/", "httpcore (HTTP client core)"),
    ("httpx/", "httpx (HTTP client)"),
    ("h11/", "h11 (HTTP/1.1 parser of httpcore)"),
    ("aiohttp/", "aiohttp (HTTP client)"),
    ("yarl/", "yarl (URLs of aiohttp)"),
    ("multidict/", "multidict (headers of aiohttp)"),
    ("anyio/", "anyio"),
    ("starlette/", "starlette"),
    ("uvicorn/", "uvicorn (server, httptools)"),
    ("sqlalchemy/", "sqlalchemy"),
    ("logging/", "logging"),
    ("asyncio/", "asyncio / uvloop event loop"),
    ("dataclasses.py", "dataclasses (asdict)"),
    ("uuid.py", "uuid"),
    ("json/", "json (stdlib)"),
    ("email/", "email (stdlib)"),
    ("typing.py", "typing"),
]


# frames every sample of a worker passes through: left out of the inclusive lists
_ROOT_FRAMES = (
    "multiprocessing/",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "uvicorn/_subprocess.py",
    "uvicorn/supervisors/",
    "asyncio/runners.py",
    "<string>",
    "uvicorn/main.py",
    "verbund/cli.py",
    "verbund/server/",
    "typer/",
    "click/",
    "runpy.py",
)


# where a request's time goes: inclusive share of samples under these functions
BREAKDOWN: list[tuple[str, str]] = [
    ("ASGI app, all of it (under uvicorn's run_asgi)", "RequestResponseCycle.run_asgi"),
    ("route handler (_openai handler)", "_make_handler.<locals>.handler"),
    ("  authentication (key hash + cache)", "authenticate"),
    ("  body read + JSON parse + checks", "read_body"),
    ("  body JSON parse", "parse_object"),
    ("  routing plan (policy + router)", "Router.plan"),
    ("  proxy (Proxy.forward)", "Proxy.forward"),
    ("    upstream call and body (Proxy._exchange, aiohttp)", "Proxy._exchange"),
    ("    usage record to spool (UsageRecorder.record)", "UsageRecorder.record"),
    ("stream relay (StreamRelay._relay, after the first byte)", "StreamRelay._relay"),
    ("  SSE usage filter (SSEUsageFilter.feed)", "SSEUsageFilter.feed"),
    ("Starlette StreamingResponse", "StreamingResponse.__call__"),
    ("usage flush to the store (background)", "UsageRecorder.flush"),
    ("health probes (background)", "Prober.probe_all"),
]

# leaves of threads that wait (counted as idle, not as work)
_IDLE_LEAVES = frozenset(
    {
        "Connection._recv",
        "_ConnectionBase.recv",
        "Condition.wait",
        "Event.wait",
        "_connection_worker_thread",
        "_worker",
        "Thread.join",
        "Semaphore.acquire",
    }
)


def py_spy() -> str:
    """The py-spy program; installed into the running interpreter's venv when missing."""
    here = Path(sys.executable).parent / "py-spy"
    found = shutil.which("py-spy") or (str(here) if here.exists() else None)
    if found:
        return found
    print("==> installing py-spy (pip)", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
    if not here.exists():
        raise RuntimeError("py-spy was installed but not found next to " + sys.executable)
    return str(here)


def record(pid: int, seconds: int, out: Path, rate: int = 200) -> Process:
    """Start sampling ``pid`` and its worker processes; returns the running py-spy."""
    argv = [
        py_spy(), "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
        "--format", "raw", "--rate", str(rate), "--duration", str(seconds), "--output", str(out),
    ]  # fmt: skip
    return Process("py-spy", argv, out.with_suffix(".log"), env=dict(os.environ)).start()


def _parse(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame)
    if not m:
        return frame, ""
    return m["func"], m["file"]


def _short(file: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in file:
            file = file.rpartition(marker)[2]
    return file


def layer(file: str) -> str:
    for needle, name in LAYERS:
        if needle in file:
            return name
    return "other: " + (_short(file).split("/")[0] or "?")


def summarize(raw: Path, top: int = 25) -> dict[str, object]:
    """Self and inclusive shares per function, self share per layer, and a few call paths."""
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    self_layer: Counter[str] = Counter()
    incl_layer: Counter[str] = Counter()
    incl_name: Counter[str] = Counter()
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        parsed = [_parse(f) for f in frames]
        func, file = parsed[-1]
        if func in _IDLE_LEAVES or any(fn == "Process.always_pong" for fn, _ in parsed):
            idle += n
            continue
        total += n
        self_fn[f"{func} ({_short(file)})"] += n
        self_layer[layer(file)] += n
        for key in {
            f"{fn} ({_short(fl)})"
            for fn, fl in parsed
            if fl and not any(r in fl for r in _ROOT_FRAMES)
        }:
            incl_fn[key] += n
        for key in {layer(fl) for _, fl in parsed}:
            incl_layer[key] += n
        for name in {fn for fn, _ in parsed}:
            incl_name[name] += n

    def pct(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / max(total, 1), 1)) for k, v in c.most_common(top)]

    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "self_by_layer": pct(self_layer),
        "inclusive_by_layer": pct(incl_layer),
        "self_by_function": pct(self_fn),
        "inclusive_by_function": pct(incl_fn),
        "breakdown": [
            (label, round(100 * incl_name[fn] / max(total, 1), 1)) for label, fn in BREAKDOWN
        ],
    }
