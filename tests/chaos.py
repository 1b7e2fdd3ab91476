"""Real-process chaos harness: simulated engines as sites, a real access point, real load.

Everything runs as its own process on 127.0.0.1 and free ports (or inside network
namespaces, see :mod:`tests.netns`): engines are ``python -m verbund.simengine``, the
access point is ``python -m verbund.cli gateway --config F``. Faults are real: SIGKILL,
SIGSTOP/SIGCONT, TCP resets from :mod:`tests.tcprelay`, drains through the admin API.

The load generator records, per request, when it started and ended (wall clock, so it
compares with the engines' logs), its status, the site that served it
(``X-Verbund-Site``), its ``X-Request-Id``, whether streaming had begun and any error.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "vbadmin-chaos-0123456789abcdef"
MODEL = "sim-llm"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def poll(cond: Callable[[], bool], what: str, within: float, every: float = 0.05) -> None:
    """Wait until ``cond()`` holds, or fail naming ``what``."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        time.sleep(every)


def child_env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep)}


# --- engines -----------------------------------------------------------------------------


@dataclass
class EngineSpec:
    """How to run one simulated engine (see ``python -m verbund.simengine --help``)."""

    name: str
    models: Sequence[str] = (MODEL,)
    slots: int = 4
    prefill_ms_per_token: float = 0.2
    decode_ms_per_token: float = 20.0
    prefix_cache_tokens: int = 32768
    metrics_style: str = "vllm"

    def args(self) -> list[str]:
        out = [
            "--name", self.name,
            "--slots", str(self.slots),
            "--prefill-ms-per-token", str(self.prefill_ms_per_token),
            "--decode-ms-per-token", str(self.decode_ms_per_token),
            "--prefix-cache-tokens", str(self.prefix_cache_tokens),
            "--metrics-style", self.metrics_style,
        ]  # fmt: skip
        for m in self.models:
            out += ["--model", m]
        return out


class EngineProc:
    """One simengine process; can be killed, stopped, continued and restarted on its port."""

    def __init__(
        self,
        spec: EngineSpec,
        log_dir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        prefix: Sequence[str] = (),
        bind: tuple[str, int] | None = None,
    ) -> None:
        self.spec = spec
        self.host = host  # where tests and the access point reach it
        self.port = port or free_port(host)
        self.bind = bind or (self.host, self.port)  # where it listens (behind a relay: differs)
        self.prefix = list(prefix)  # e.g. ["ip", "netns", "exec", "ns1"]
        self.log = log_dir / f"engine-{spec.name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, within: float = 30.0) -> EngineProc:
        return self.launch().wait_ready(within)

    def launch(self) -> EngineProc:
        cmd = [
            *self.prefix,
            sys.executable, "-m", "verbund.simengine",
            "--host", self.bind[0], "--port", str(self.bind[1]), *self.spec.args(),
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT
            )
        self.stopped = False
        return self

    def wait_ready(self, within: float = 30.0) -> EngineProc:
        poll(self._ready, f"engine {self.spec.name} on {self.url}", within, every=0.1)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"engine {self.spec.name} exited:\n{self.log.read_text()[-2000:]}")
        try:
            return httpx.get(self.url + "/health", timeout=1, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, sig: signal.Signals) -> float:
        """Send ``sig``; returns the wall time it was sent."""
        assert self.process is not None
        os.kill(self.pid, sig)
        return time.time()

    def kill(self) -> float:
        at = self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)
        return at

    def stall(self) -> float:
        self.stopped = True
        return self.signal(signal.SIGSTOP)

    def resume(self) -> float:
        self.stopped = False
        return self.signal(signal.SIGCONT)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(method, self.url + path, timeout=10, trust_env=False, **kw)
        r.raise_for_status()
        return r.json()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/_sim/stats")
        return result

    def fault(self, mode: str, **kw: Any) -> None:
        self.call("POST", "/_sim/fault", json={"mode": mode, **kw})

    def close(self) -> None:
        p = self.process
        if p is None or p.poll() is not None:
            return
        if self.stopped:
            os.kill(p.pid, signal.SIGCONT)
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


# --- the federation config and the access point -------------------------------------------


def toml(data: dict[str, Any]) -> str:
    """Just enough TOML for federation configs: tables, arrays of tables, scalars, lists."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} as TOML")

    def table(name: str, body: dict[str, Any], out: list[str], header: str) -> None:
        out.append(header)
        nested: list[tuple[str, list[dict[str, Any]]]] = []
        for k, v in body.items():
            if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                nested.append((k, v))
            elif isinstance(v, dict):
                out.append(
                    f"{k} = {{ " + ", ".join(f"{a} = {value(b)}" for a, b in v.items()) + " }"
                )
            else:
                out.append(f"{k} = {value(v)}")
        for k, items in nested:
            for item in items:
                table(f"{name}.{k}", item, out, f"[[{name}.{k}]]")

    out: list[str] = []
    for key, v in data.items():
        if isinstance(v, dict):
            table(key, v, out, f"[{key}]")
        elif isinstance(v, list):
            for item in v:
                table(key, item, out, f"[[{key}]]")
        out.append("")
    return "\n".join(out)


@dataclass
class Site:
    name: str
    region: str
    engines: list[tuple[EngineSpec, str]]  # (spec, base URL the access point uses)


def federation(
    state_dir: Path,
    port: int,
    sites: Sequence[Site],
    *,
    policy: str = "score",
    routing: dict[str, Any] | None = None,
    models: Iterable[str] = (MODEL,),
    home_site: str = "",
) -> dict[str, Any]:
    """A federation config: each engine one backend (with its metrics URL and capacity)."""
    return {
        "gateway": {
            "name": "ap-chaos",
            "listen": f"127.0.0.1:{port}",
            "home_site": home_site,
            "admin_key_env": "VERBUND_ADMIN_KEY",
            "state_dir": str(state_dir),
        },
        "store": {"url": f"sqlite+aiosqlite:///{state_dir / 'verbund.db'}"},
        "routing": {"policy": policy, **(routing or {})},
        "sites": [
            {
                "name": s.name,
                "region": s.region,
                "jurisdiction": "DE",
                "max_data_class": "confidential",
                "backends": [
                    {
                        "name": spec.name,
                        "url": url,
                        "models": list(spec.models),
                        "metrics_url": url + "/metrics",
                        "max_concurrency": spec.slots,
                        "resume": "continue_final_message",
                    }
                    for spec, url in s.engines
                ],
            }
            for s in sites
        ],
        "models": [{"name": m, "kind": "chat"} for m in models],
        "institutions": [
            {"id": "uni-a", "name": "Universität A", "home_region": sites[0].region},
        ],
    }


class GatewayProc:
    """``verbund gateway --config F`` as a subprocess, with an admin client and a key."""

    def __init__(self, config: dict[str, Any], work: Path) -> None:
        self.config = config
        self.work = work
        self.path = work / "federation.toml"
        self.log = work / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.key = ""
        listen = config["gateway"]["listen"]
        self.url = f"http://{listen}"

    def start(self, within: float = 60.0) -> GatewayProc:
        return self.launch().wait_ready(within)

    def launch(self) -> GatewayProc:
        self.path.write_text(toml(self.config), encoding="utf-8")
        cmd = [
            sys.executable, "-m", "verbund.cli", "gateway",
            "--config", str(self.path), "--log-level", "warning",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**child_env(), "VERBUND_ADMIN_KEY": ADMIN_KEY},
                cwd=self.work,
            )
        return self

    def wait_ready(self, within: float = 60.0) -> GatewayProc:
        """Until /readyz answers 200 and every backend is healthy; then make a key for uni-a."""
        deadline = time.monotonic() + within
        poll(self._ready, f"the access point on {self.url} to be ready", within, every=0.1)
        poll(
            lambda: all(b["healthy"] for b in self.backends().values()),
            "every backend to be healthy",
            max(1.0, deadline - time.monotonic()),
            every=0.1,
        )
        created = self.admin("POST", "/admin/keys", json={"institution": "uni-a", "name": "chaos"})
        self.key = created["key"]
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"gateway exited:\n{self.log.read_text()[-3000:]}")
        try:
            r = httpx.get(self.url + "/readyz", timeout=2, trust_env=False)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def admin(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(
            method,
            self.url + path,
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            timeout=10,
            trust_env=False,
            **kw,
        )
        r.raise_for_status()
        return r.json()

    def backends(self) -> dict[str, dict[str, Any]]:
        """Backend name -> the admin API's view (healthy, ejected, outstanding, ...)."""
        sites = self.admin("GET", "/admin/sites")["sites"]
        return {b["name"]: b for s in sites for b in s.get("backends", [])}

    def close(self) -> None:
        p = self.process
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


# --- load ------------------------------------------------------------------------------------


@dataclass
class Result:
    index: int
    stream: bool
    start: float
    end: float = 0.0
    status: int = 0
    site: str = ""
    request_id: str = ""
    first_event: float | None = None  # wall time of the first stream event (the first byte)
    first_content: float | None = None  # wall time of the first content chunk
    error: str = ""
    done: bool = False  # a complete answer: [DONE] seen, or a 200 JSON answer with content

    @property
    def failed(self) -> bool:
        return not self.done

    @property
    def started_streaming(self) -> bool:
        """The access point had sent the first event: past the point of a plain retry."""
        return self.first_event is not None

    @property
    def latency(self) -> float:
        return self.end - self.start

    def brief(self) -> str:
        kind = "stream" if self.stream else "json"
        return (
            f"#{self.index} {kind} t={self.start:.2f}+{self.latency:.2f}s status={self.status} "
            f"site={self.site or '-'} streamed={self.started_streaming} error={self.error[:160]}"
        )


def one_request(
    client: httpx.Client,
    url: str,
    key: str,
    index: int,
    stream: bool,
    body: dict[str, Any],
) -> Result:
    """One chat completion through the access point, recorded."""
    res = Result(index=index, stream=stream, start=time.time())
    payload = {**body, "stream": stream}
    headers = {"authorization": f"Bearer {key}"}
    try:
        if stream:
            with client.stream(
                "POST", url + "/v1/chat/completions", json=payload, headers=headers
            ) as r:
                res.status = r.status_code
                res.site = r.headers.get("x-verbund-site", "")
                res.request_id = r.headers.get("x-request-id", "")
                if r.status_code != 200:
                    res.error = r.read().decode(errors="replace")[:300]
                else:
                    _read_stream(r, res)
        else:
            r = client.post(url + "/v1/chat/completions", json=payload, headers=headers)
            res.status = r.status_code
            res.site = r.headers.get("x-verbund-site", "")
            res.request_id = r.headers.get("x-request-id", "")
            if r.status_code == 200:
                content = r.json()["choices"][0]["message"]["content"]
                res.done = bool(content)
                res.error = "" if content else "empty answer"
            else:
                res.error = r.text[:300]
    except httpx.HTTPError as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    res.end = time.time()
    return res


def _read_stream(r: httpx.Response, res: Result) -> None:
    for line in r.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            res.done = True
            return
        event = json.loads(data)
        if res.first_event is None:
            res.first_event = time.time()
        if "error" in event:
            res.error = f"error event: {event['error'].get('code')}"
            return
        for choice in event.get("choices") or []:
            if (choice.get("delta") or {}).get("content") and res.first_content is None:
                res.first_content = time.time()
    res.error = res.error or "stream ended without [DONE]"


def chat_body(index: int, max_tokens: int = 16) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. " * 8},
            {"role": "user", "content": f"Question {index}: " + "Wie spät ist es? " * 10},
        ],
    }


class Load:
    """Closed-loop load: ``concurrency`` workers, requests back to back, bounded count/time.

    Even-numbered requests stream, odd ones do not. ``stop()`` ends it early.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        total: int,
        concurrency: int = 4,
        timeout: float = 90.0,
        body: Callable[[int], dict[str, Any]] = chat_body,
    ) -> None:
        self.url, self.key = url, key
        self.total = total
        self.concurrency = concurrency
        self.timeout = timeout
        self.body = body
        self.results: list[Result] = []
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started = 0.0

    def start(self) -> Load:
        self.started = time.time()
        self._threads = [
            threading.Thread(target=self._worker, daemon=True) for _ in range(self.concurrency)
        ]
        for t in self._threads:
            t.start()
        return self

    def _worker(self) -> None:
        with httpx.Client(timeout=self.timeout, trust_env=False) as client:
            while not self._stop.is_set():
                with self._lock:
                    if self._next >= self.total:
                        return
                    i = self._next
                    self._next += 1
                res = one_request(client, self.url, self.key, i, i % 2 == 0, self.body(i))
                with self._lock:
                    self.results.append(res)

    @property
    def completed(self) -> int:
        with self._lock:
            return len(self.results)

    def wait_completed(self, n: int, within: float) -> None:
        poll(lambda: self.completed >= n, f"{n} completed requests", within)

    def stop(self) -> None:
        self._stop.set()

    def join(self, within: float) -> list[Result]:
        deadline = time.monotonic() + within
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive = sum(t.is_alive() for t in self._threads)
        if alive:
            raise TimeoutError(f"{alive} load workers still running after {within}s")
        return sorted(self.results, key=lambda r: r.index)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def failed_before_streaming(results: Iterable[Result]) -> list[Result]:
    return [r for r in results if r.failed and not r.started_streaming]


def describe(results: Sequence[Result], limit: int = 12) -> str:
    return "\n".join(r.brief() for r in list(results)[:limit]) + (
        f"\n... and {len(results) - limit} more" if len(results) > limit else ""
    )


@dataclass
class Federation:
    """The processes of one chaos test (closed by whoever started them)."""

    engines: dict[str, EngineProc]
    gateway: GatewayProc
    extra: list[Any] = field(default_factory=list)  # relays and the like


class BackendWatcher:
    """Samples the access point's view of its backends every ``every`` seconds.

    ``failures`` in ``/admin/sites`` grows by one for every try that failed at a backend,
    so its growth in a time window is what the access point sent to a dead backend then.
    """

    def __init__(self, gateway: GatewayProc, every: float = 0.1) -> None:
        self.gateway = gateway
        self.every = every
        self.samples: list[tuple[float, dict[str, dict[str, Any]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> BackendWatcher:
        self._thread.start()
        poll(lambda: bool(self.samples), "a first sample of /admin/sites", 10)
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            try:
                view = self.gateway.backends()
            except httpx.HTTPError:
                view = None
            if view is not None:
                self.samples.append((t, view))
            self._stop.wait(self.every)

    def value(self, backend: str, key: str, at: float) -> Any:
        """The last sampled value at or before ``at``."""
        before = [view for t, view in self.samples if t <= at]
        if not before:
            raise AssertionError(f"no /admin/sites sample before {at}")
        return before[-1][backend][key]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
