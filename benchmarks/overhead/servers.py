"""The four things measured: the mock backend itself, nginx, LiteLLM and Verbund.

Every server runs as a child process of the benchmark on a free 127.0.0.1 port, with
its configuration generated into the run's work directory, and is stopped (by its own
pid) when the benchmark ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.overhead.loadgen import Template

ROOT = Path(__file__).resolve().parents[2]
LITELLM_VENV = ROOT / ".venv-litellm"
LITELLM_SPEC = "litellm[proxy]==1.108.7"

MODEL, STREAM_MODEL = "mock", "mock-stream"
PROMPT = [{"role": "user", "content": "Say hello to the federation in a few words."}]
CHAT_BODY = json.dumps({"model": MODEL, "messages": PROMPT, "max_tokens": 64}).encode()
STREAM_BODY = json.dumps(
    {"model": STREAM_MODEL, "messages": PROMPT, "max_tokens": 64, "stream": True}
).encode()

_WORDS = [  # 20 tokens
    "Hello",
    "federation,",
    "this",
    "is",
    "a",
    "fixed",
    "answer",
    "from",
    "the",
    "mock",
    "backend",
    "that",
    "counts",
    "twenty",
    "words",
    "for",
    "the",
    "stream",
    "benchmark",
    "today",
]


def chat_completion() -> str:
    return json.dumps(
        {
            "id": "chatcmpl-bench0001",
            "object": "chat.completion",
            "created": 1700000000,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(_WORDS)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 21, "completion_tokens": 20, "total_tokens": 41},
        },
        separators=(",", ":"),
    )


def chat_stream() -> str:
    """A role chunk, 20 content chunks, a finish chunk, a usage chunk and [DONE]."""

    def chunk(choices: list[object], usage: object = None) -> str:
        body: dict[str, object] = {
            "id": "chatcmpl-bench0001",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": STREAM_MODEL,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return "data: " + json.dumps(body, separators=(",", ":")) + "\n\n"

    def delta(d: dict[str, str], finish: str | None = None) -> list[object]:
        return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

    events = [chunk(delta({"role": "assistant", "content": ""}))]
    events += [chunk(delta({"content": (" " if i else "") + w})) for i, w in enumerate(_WORDS)]
    events.append(chunk(delta({}, "stop")))
    events.append(chunk([], {"prompt_tokens": 21, "completion_tokens": 20, "total_tokens": 41}))
    events.append("data: [DONE]\n\n")
    return "".join(events)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str, deadline: float, ok: tuple[int, ...] = (200,), proc: Proc | None = None
) -> None:
    """Poll ``url`` until it answers; on failure ``proc`` is stopped before raising."""
    end = time.monotonic() + deadline
    last = ""
    while time.monotonic() < end:
        if proc is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}; see {proc.log}")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code in ok:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    if proc is not None:
        proc.stop()
    raise RuntimeError(f"{url} not ready after {deadline:.0f} s ({last})")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is not None:
            return
        # each server leads its own process group (start_new_session): stop the group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


def spawn(
    name: str, argv: list[str], workdir: Path, env: dict[str, str | None] | None = None
) -> Proc:
    """Start a server in its own session; ``env`` entries set to None are removed."""
    log = workdir / f"{name}.log"
    full = {**os.environ, **(env or {})}
    f = log.open("wb")
    popen = subprocess.Popen(
        argv,
        stdout=f,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in full.items() if v is not None},
        cwd=workdir,
        start_new_session=True,
    )
    f.close()
    return Proc(name, popen, log)


@dataclass
class Target:
    """Something the load generator calls; ``procs`` are the processes it is charged for."""

    name: str
    port: int
    chat_path: str
    stream_path: str
    headers: tuple[tuple[str, str], ...] = ()
    procs: list[Proc] = field(default_factory=list)
    version: str = ""
    admin_key: str = ""  # Verbund only: for reading its usage report

    def template(self, stream: bool) -> Template:
        if stream:
            return Template(
                "127.0.0.1",
                self.port,
                self.stream_path,
                STREAM_BODY,
                self.headers,
                expect=b"data: [DONE]",
                stream=True,
            )
        return Template("127.0.0.1", self.port, self.chat_path, CHAT_BODY, self.headers)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        return all(p.popen.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


# ---------------------------------------------------------------- nginx


def ensure_nginx() -> str:
    path = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if path:
        return path
    if os.geteuid() != 0:
        raise RuntimeError("nginx is missing; install it with: sudo apt-get install -y nginx")
    print("==> installing nginx (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "nginx"], check=True, env=env, stdout=subprocess.DEVNULL
    )
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        raise RuntimeError("nginx was installed but not found")
    return found


def nginx_version(nginx: str) -> str:
    r = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    return (r.stderr or r.stdout).strip().rpartition("/")[2]


def _nginx_conf(prefix: Path, workers: int, server: str, upstream: str = "") -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"  {k}_temp_path {prefix / 'tmp' / k};"
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes {workers};
worker_rlimit_nofile 20000;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
{temp}
{upstream}
  server {{
{server}
  }}
}}
"""


def start_nginx(nginx: str, name: str, workdir: Path, conf: str) -> Proc:
    prefix = workdir / name
    for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / k).mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(conf)
    subprocess.run([nginx, "-t", "-q", "-p", str(prefix), "-c", str(path)], check=True)
    return spawn(name, [nginx, "-p", str(prefix), "-c", str(path), "-g", "daemon off;"], workdir)


def start_mock(nginx: str, workdir: Path) -> Target:
    """nginx answering with a fixed completion (or a fixed SSE stream under /s/).

    The answers are static files; nginx refuses POST to a static file with 405, which
    ``error_page 405 =200 $uri`` turns into the file itself with status 200.
    """
    port = free_port()
    www = workdir / "mock" / "www"
    models = json.dumps(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "bench"}
                for m in (MODEL, STREAM_MODEL)
            ],
        }
    )
    for rel, text in (
        ("v1/chat/completions", chat_completion()),
        ("s/v1/chat/completions", chat_stream()),
        ("v1/models", models),
        ("s/v1/models", models),
        ("health", "ok"),
    ):
        (www / rel).parent.mkdir(parents=True, exist_ok=True)
        (www / rel).write_text(text)
    server = f"""    listen 127.0.0.1:{port} backlog=4096;
    root {www};
    types {{ }}
    default_type application/json;
    error_page 405 =200 $uri;
    location /s/v1/chat/ {{ default_type text/event-stream; }}
    location = /health {{ default_type text/plain; }}"""
    proc = start_nginx(nginx, "mock", workdir, _nginx_conf(workdir / "mock", 1, server))
    target = Target("direct", port, "/v1/chat/completions", "/s/v1/chat/completions", procs=[proc])
    wait_http(f"http://127.0.0.1:{port}/health", 15, proc=proc)
    return target


def start_nginx_proxy(nginx: str, workdir: Path, backend: int, workers: int) -> Target:
    port = free_port()
    upstream = f"  upstream mock {{ server 127.0.0.1:{backend}; keepalive 256; }}"
    server = f"""    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}"""
    proc = start_nginx(
        nginx,
        "nginx-proxy",
        workdir,
        _nginx_conf(workdir / "nginx-proxy", workers, server, upstream),
    )
    target = Target("nginx", port, "/v1/chat/completions", "/s/v1/chat/completions", procs=[proc])
    wait_http(f"http://127.0.0.1:{port}/health", 15, proc=proc)
    return target


# ---------------------------------------------------------------- LiteLLM


def ensure_litellm() -> Path:
    """``.venv-litellm/`` with LiteLLM's proxy; created once, reused while the pin matches."""
    stamp = LITELLM_VENV / ".verbund-bench-install"
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists() and stamp.exists() and stamp.read_text().strip() == LITELLM_SPEC:
        return exe
    print(f"==> installing {LITELLM_SPEC} into {LITELLM_VENV} (a few minutes, once)", flush=True)
    py = LITELLM_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, LITELLM_SPEC], check=True)
    stamp.write_text(LITELLM_SPEC + "\n")
    return exe


def start_litellm(workdir: Path, backend: int, workers: int) -> Target:
    exe = ensure_litellm()
    port = free_port()
    master = "sk-bench-" + os.urandom(12).hex()
    cfg = workdir / "litellm.yaml"
    # YAML is a superset of JSON
    cfg.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {
                            "model": f"openai/{MODEL}",
                            "api_base": f"http://127.0.0.1:{backend}/v1",
                            "api_key": "sk-mock",
                        },
                    },
                    {
                        "model_name": STREAM_MODEL,
                        "litellm_params": {
                            "model": f"openai/{STREAM_MODEL}",
                            "api_base": f"http://127.0.0.1:{backend}/s/v1",
                            "api_key": "sk-mock",
                        },
                    },
                ],
                "general_settings": {"master_key": master},
                "litellm_settings": {"set_verbose": False, "json_logs": False},
            },
            indent=2,
        )
    )
    log_cfg = workdir / "litellm-logging.json"
    log_cfg.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {
                    "err": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
                },
                "loggers": {
                    "uvicorn": {"handlers": ["err"], "level": "WARNING"},
                    "uvicorn.error": {"level": "WARNING"},
                    "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
                },
            }
        )
    )
    env: dict[str, str | None] = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DATABASE_URL": None,
        "PYTHONUNBUFFERED": "1",
    }
    proc = spawn(
        "litellm",
        [
            str(exe),
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            str(workers),
            "--log_config",
            str(log_cfg),
            "--timeout_worker_healthcheck",
            "60",
        ],
        workdir,
        env,
    )
    version = subprocess.run(
        [
            str(LITELLM_VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = Target(
        "litellm",
        port,
        "/v1/chat/completions",
        "/v1/chat/completions",
        headers=(("Authorization", f"Bearer {master}"),),
        procs=[proc],
        version=version,
    )
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", 300, proc=proc)
    return target


# ---------------------------------------------------------------- Verbund


def start_verbund(workdir: Path, backend: int, workers: int, name: str = "verbund") -> Target:
    port = free_port()
    state = workdir / name
    state.mkdir(parents=True, exist_ok=True)
    admin = "vbadmin-bench-" + os.urandom(12).hex()
    cfg = state / "federation.toml"
    cfg.write_text(f"""[gateway]
name = "bench"
listen = "127.0.0.1:{port}"
home_site = "bench"
admin_key_env = "VERBUND_BENCH_ADMIN_KEY"
state_dir = "{state}"
workers = {workers}

[store]
url = "sqlite+aiosqlite:///{state / "verbund.db"}"

[[sites]]
name = "bench"
region = "NW"
jurisdiction = "DE"
max_data_class = "sensitive"

  [[sites.backends]]
  name = "mock"
  url = "http://127.0.0.1:{backend}"
  models = ["{MODEL}"]

  [[sites.backends]]
  name = "mock-stream"
  url = "http://127.0.0.1:{backend}/s"
  models = ["{STREAM_MODEL}"]

[[models]]
name = "{MODEL}"
kind = "chat"

[[models]]
name = "{STREAM_MODEL}"
kind = "chat"

[[institutions]]
id = "bench-uni"
name = "Benchmark University"
home_region = "NW"
default_data_class = "internal"
""")
    env: dict[str, str | None] = {
        "VERBUND_BENCH_ADMIN_KEY": admin,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    proc = spawn(
        name,
        [
            sys.executable,
            "-m",
            "verbund.cli",
            "gateway",
            "--config",
            str(cfg),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        workdir,
        env,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/readyz", 180, proc=proc)
    # a real key, created through the admin API
    try:
        r = httpx.post(
            f"{base}/admin/keys",
            json={"institution": "bench-uni", "name": "bench"},
            headers={"authorization": f"Bearer {admin}"},
            timeout=30,
        )
        r.raise_for_status()
    except httpx.HTTPError:
        proc.stop()
        raise
    key = r.json()["key"]
    target = Target(
        name,
        port,
        "/v1/chat/completions",
        "/v1/chat/completions",
        headers=(("Authorization", f"Bearer {key}"),),
        procs=[proc],
        admin_key=admin,
    )
    return target
