"""The four things measured: the mock backend itself, nginx, LiteLLM and Verbund.

Every server runs as a child process of the benchmark on a free 127.0.0.1 port, with
its configuration generated into the run's work directory, and is stopped (by its own
pid) when the benchmark ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.overhead.loadgen import Template
from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.ports import free_port
from harness.processes import ROOT, Process

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


def spawn(
    name: str, argv: list[str], workdir: Path, env: dict[str, str | None] | None = None
) -> Process:
    """Start a server in its own session (stopped as a group); ``env`` entries set to None
    are removed."""
    full = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return Process(
        name, argv, workdir / f"{name}.log", env=full, cwd=workdir, new_session=True
    ).start()


@dataclass
class Target:
    """Something the load generator calls; ``procs`` are the processes it is charged for."""

    name: str
    port: int
    chat_path: str
    stream_path: str
    headers: tuple[tuple[str, str], ...] = ()
    procs: list[Process] = field(default_factory=list)
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
        return all(p.running for p in self.procs)

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


def start_nginx(nginx: str, name: str, workdir: Path, conf: str) -> Process:
    prefix = workdir / name
    for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / k).mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(conf)
    subprocess.run([nginx, "-t", "-q", "-p", str(prefix), "-c", str(path)], check=True)
    return spawn(name, [nginx, "-p", str(prefix), "-c", str(path), "-g", "daemon off;"], workdir)


def start_mock(nginx: str, workdir: Path, probes_log: Path | None = None) -> Target:
    """nginx answering with a fixed completion (or a fixed SSE stream under /s/).

    The answers are static files; nginx refuses POST to a static file with 405, which
    ``error_page 405 =200 $uri`` turns into the file itself with status 200. With
    ``probes_log``, health probes (``/v1/models``, ``/health``) are logged there (to
    count them); nothing else is.
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
    if probes_log is not None:
        server += f"""
    location = /v1/models {{ access_log {probes_log}; }}
    location = /s/v1/models {{ access_log {probes_log}; }}"""
        server = server.replace(
            "location = /health { default_type text/plain; }",
            f"location = /health {{ default_type text/plain; access_log {probes_log}; }}",
        )
    proc = start_nginx(nginx, "mock", workdir, _nginx_conf(workdir / "mock", 1, server))
    target = Target("direct", port, "/v1/chat/completions", "/s/v1/chat/completions", procs=[proc])
    proc.wait_http(f"http://127.0.0.1:{port}/health", 15)
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
    proc.wait_http(f"http://127.0.0.1:{port}/health", 15)
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
    proc.wait_http(f"http://127.0.0.1:{port}/health/liveliness", 300)
    return target


# ---------------------------------------------------------------- Verbund


def start_verbund(workdir: Path, backend: int, workers: int, name: str = "verbund") -> Target:
    state = workdir / name
    mock = f"http://127.0.0.1:{backend}"
    config = fed.federation(
        "bench",
        state,
        [
            fed.site(
                "bench",
                "NW",
                [
                    fed.backend("mock", mock, [MODEL]),
                    fed.backend("mock-stream", mock + "/s", [STREAM_MODEL]),
                ],
                max_data_class="sensitive",
            )
        ],
        port=free_port(),
        gateway={"home_site": "bench", "workers": workers},
        models=[MODEL, STREAM_MODEL],
        institutions=[
            fed.institution(
                "bench-uni",
                name="Benchmark University",
                home_region="NW",
                default_data_class="internal",
            )
        ],
    )
    gateway = GatewayProcess(
        config,
        state,
        admin_key="vbadmin-bench-" + os.urandom(12).hex(),
        args=["--workers", str(workers)],
        name=name,
    )
    gateway.start(180)
    try:
        key = gateway.create_key("bench-uni", "bench")["key"]  # a real key, as clients have
    except httpx.HTTPError:
        gateway.stop()
        raise
    return Target(
        name,
        int(config["gateway"]["listen"].rpartition(":")[2]),
        "/v1/chat/completions",
        "/v1/chat/completions",
        headers=(("Authorization", f"Bearer {key}"),),
        procs=[gateway.process],
        admin_key=gateway.admin_key,
    )
