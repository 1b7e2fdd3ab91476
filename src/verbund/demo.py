"""The embedded demo federation behind ``verbund up``.

It starts a real model server for every backend of the config that has a ``launch``
table: llama.cpp (``llama-cpp-python[server]``) for chat and embeddings, MLServer with a
scikit-learn model and KServe's model server with PyTorch, ONNX and Keras models for OIP
v2 (each trained once and kept); one site agent per site (:mod:`verbund.demo_agents`),
which announces the site's backends; then one access point in this process, following
the agents, and keys for every institution. Child processes die with this process
(``PR_SET_PDEATHSIG``) and are stopped on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from verbund import demo_idp, demo_models
from verbund.config import (
    BackendConfig,
    FederationConfig,
    LaunchConfig,
    inherited_license,
    load_config,
    parse_config,
)
from verbund.demo_agents import plan_agents
from verbund.errors import VerbundError
from verbund.gateway import Services, create_app
from verbund.jobs import (
    die_with_parent,
    free_port,
    llama_server_command,
    smollm2_gguf,
    stop_process,
)
from verbund.server import ensure_port_free, make_server

log = logging.getLogger("verbund.demo")

__all__ = ["DemoError", "ModelServer", "default_demo_config", "run_demo", "smollm2_gguf"]


class DemoError(VerbundError):
    """The demo federation could not start; the message says what to do."""


def default_demo_config() -> dict[str, Any]:
    import tomllib

    text = resources.files("verbund").joinpath("demo.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def _die_with_parent_and_yield() -> None:
    """As :func:`die_with_parent`, at a lower CPU priority: a server the demo does not
    wait for must not slow down the start of those it waits for."""
    die_with_parent()
    os.nice(10)


# SmolLM2 is a ChatML model; this format of llama-cpp-python lists the tools in the
# system prompt and enforces tool choice and arguments by grammar
FUNCTION_CALLING = "chatml-function-calling"


@dataclass
class ModelServer:
    """One launched model server process."""

    backend: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_path: str = "/v1/models"
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # of the ready check
    started: float = field(default_factory=time.monotonic)
    ready_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start_llama(cls, backend: BackendConfig, log_dir: Path) -> ModelServer:
        assert backend.launch is not None
        model_file = backend.launch.model_file or str(smollm2_gguf())
        port = free_port()
        alias = backend.models[0]
        threads, n_ctx = backend.launch.threads, backend.launch.n_ctx
        cmd = llama_server_command(sys.executable, model_file, alias, port, threads, n_ctx)
        if backend.launch.embedding:
            cmd += ["--embedding", "True"]
        chat_format = backend.launch.chat_format or (
            "" if backend.launch.model_file or backend.launch.embedding else FUNCTION_CALLING
        )
        if chat_format:
            cmd += ["--chat_format", chat_format]
        if backend.launch.kv_overrides:
            cmd += ["--kv_overrides", *backend.launch.kv_overrides]
        proc, log_path = _spawn(cmd, log_dir / f"{backend.name}.log")
        return cls(backend.name, port, proc, log_path)

    @classmethod
    def start_mlserver(
        cls, backend: BackendConfig, python: Path, model_file: Path, state_dir: Path
    ) -> ModelServer:
        """MLServer (OIP v2) serving one scikit-learn model under the backend's model name."""
        assert backend.launch is not None
        port, grpc_port = free_port(), free_port()
        folder = state_dir / "mlserver" / backend.name
        model_dir = folder / backend.models[0]
        model_dir.mkdir(parents=True, exist_ok=True)
        settings = demo_models.server_settings(port, grpc_port)
        (folder / "settings.json").write_text(json.dumps(settings, indent=2))
        model = demo_models.model_settings(backend.models[0], model_file, backend.launch.train)
        (model_dir / "model-settings.json").write_text(json.dumps(model, indent=2))
        threads = str(backend.launch.threads)
        env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
        proc, log_path = _spawn(
            demo_models.mlserver_command(python, folder),
            state_dir / "logs" / f"{backend.name}.log",
            cwd=folder,  # MLServer keeps its own scratch folders in the working directory
            env=env,
        )
        return cls(backend.name, port, proc, log_path, ready_path="/v2/health/ready")

    @classmethod
    def start_kserve(
        cls, backend: BackendConfig, python: Path, model_file: Path, state_dir: Path
    ) -> ModelServer:
        """KServe's model server (OIP v2 with binary tensors) with one framework's model."""
        assert backend.launch is not None
        port = free_port()
        threads = str(backend.launch.threads)
        env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
        cmd = demo_models.kserve_command(
            python, backend.launch.framework, model_file, backend.models[0], port
        )
        log_path = state_dir / "logs" / f"{backend.name}.log"
        background = not backend.launch.await_ready
        proc, log_path = _spawn(cmd, log_path, env=env, background=background)
        ready = f"/v2/models/{backend.models[0]}/ready"
        return cls(backend.name, port, proc, log_path, ready_path=ready)

    def stop(self, timeout: float = 5.0) -> None:
        stop_process(self.process, timeout)


def _spawn(
    cmd: list[str],
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    *,
    background: bool = False,
) -> tuple[subprocess.Popen[bytes], Path]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            preexec_fn=_die_with_parent_and_yield if background else die_with_parent,
        )
    return proc, log_path


def framework_python(environment: str, configured: str = "") -> Path:
    """The interpreter of a framework's own venv (``environment``: a key of
    :data:`verbund.demo_models.ENVIRONMENTS`), or a DemoError that says how to make it."""
    found = demo_models.find_python(environment, configured)
    if found is None:
        env = demo_models.ENVIRONMENTS[environment]
        raise DemoError(
            f"The {environment} model server is not installed: run ./{env.script} "
            f"(./scripts/demo does), or point ${env.env_var} at a Python that has it."
        )
    return found


def train_model(name: str, python: Path, state_dir: Path) -> Path:
    """The folder of the demo model ``name``, trained in ``python``'s venv unless it is
    there already (trained again only when the training script or the interpreter
    changes)."""
    try:
        return demo_models.train(name, python, state_dir)
    except demo_models.TrainingFailed as exc:
        raise DemoError(str(exc)) from None


async def wait_ready(servers: list[ModelServer], within: float = 180.0) -> None:
    deadline = time.monotonic() + within
    pending = list(servers)
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while pending:
            for srv in list(pending):
                if srv.process.poll() is not None:
                    raise DemoError(
                        f"Model server {srv.backend} exited with code {srv.process.returncode}; "
                        f"see {srv.log_path}."
                    )
                with contextlib.suppress(httpx.HTTPError):
                    ready = await client.get(srv.url + srv.ready_path, headers=srv.headers)
                    if ready.status_code == 200:
                        srv.ready_seconds = round(time.monotonic() - srv.started, 2)
                        pending.remove(srv)
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(s.backend for s in pending)
                raise DemoError(f"Model servers not ready after {within:.0f}s: {names}.")
            await asyncio.sleep(0.2)


def launch_backends(
    config: FederationConfig, state_dir: Path
) -> tuple[FederationConfig, list[ModelServer]]:
    """Start every backend with a ``launch`` table; return the config with their real URLs.

    OIP model servers (MLServer, KServe) start first: they take longest to be ready (their
    imports alone take seconds), and llama.cpp servers load while they do.
    """
    servers: list[ModelServer] = []
    data = config.model_dump(mode="json")
    launched = [b for site in data["sites"] for b in site["backends"] if b.get("launch")]
    trained: dict[tuple[str, str], Path] = {}

    def model_file(launch: LaunchConfig, runtime: str) -> Path:
        if launch.model_file:
            return Path(launch.model_file).resolve()
        trainer = demo_models.TRAINERS[launch.train]
        own = launch.python if trainer.environment == runtime else ""
        python = framework_python(trainer.environment, own)
        key = (launch.train, str(python))
        if key not in trained:
            trained[key] = train_model(launch.train, python, state_dir)
        return (trained[key] / trainer.files[runtime]).resolve()

    try:
        # model servers of OIP models first: their imports take longest
        for b in sorted(launched, key=lambda b: b["launch"]["kind"] == "llama-cpp"):
            backend = BackendConfig.model_validate(b)
            launch = backend.launch
            assert launch is not None
            if launch.kind == "llama-cpp":
                srv = ModelServer.start_llama(backend, state_dir / "logs")
            elif launch.kind == "mlserver":
                python = framework_python("sklearn", launch.python)
                file = model_file(launch, "sklearn")
                srv = ModelServer.start_mlserver(backend, python, file, state_dir)
            else:
                python = framework_python(launch.framework, launch.python)
                file = model_file(launch, launch.framework)
                srv = ModelServer.start_kserve(backend, python, file, state_dir)
            servers.append(srv)
            b["url"] = srv.url
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return parse_config(data), servers


async def _demo_keys(config: FederationConfig, state_dir: Path) -> dict[str, str]:
    """A key per institution: reused from demo.json while still valid, else created."""
    previous: dict[str, str] = {}
    demo_file = state_dir / "demo.json"
    if demo_file.exists():
        with contextlib.suppress(ValueError, OSError):
            previous = json.loads(demo_file.read_text()).get("keys", {})
    svc = Services.build(config, admin_key=None)
    try:
        await svc.start(background=False)
        keys: dict[str, str] = {}
        for inst in config.institutions:
            old = previous.get(inst.id)
            entry = await svc.keys.resolve(old) if old else None
            if entry is not None and entry.institution_id == inst.id:
                keys[inst.id] = old  # type: ignore[assignment]
            else:
                keys[inst.id] = (await svc.keys.create(inst.id, "demo", actor="demo")).key
        return keys
    finally:
        await svc.stop()


def _admin_key(state_dir: Path) -> str:
    import secrets

    demo_file = state_dir / "demo.json"
    with contextlib.suppress(ValueError, OSError):
        key = json.loads(demo_file.read_text()).get("admin_key")
        if isinstance(key, str) and key.startswith("vbadmin-"):
            return key
    return "vbadmin-" + secrets.token_urlsafe(32)


def training_python() -> Path | None:
    """The recipe Python ``scripts/_training_env.sh`` makes beside the core venv (or the
    one ``VERBUND_TRAINING_PYTHON`` names)."""
    return demo_models.find_python("training")


def _training_defaults(raw: dict[str, Any]) -> None:
    """Demo sites' runners: the training Python where the scripts made one, and the
    served SmolLM2 GGUF as the file of a base model listed without a path."""
    python = training_python()
    for site in raw.get("sites", []):
        runner = site.get("runner")
        if not runner:
            continue
        if not runner.get("python") and python is not None:
            runner["python"] = str(python)
        models = runner.get("base_models") or {}
        for name, path in models.items():
            if not path and name.startswith("smollm2-135m"):
                models[name] = str(smollm2_gguf())


async def run_demo(port: int, state_dir: Path, config_file: Path | None) -> None:
    state_dir = state_dir.resolve()  # noqa: ASYNC240 - once at start-up, before serving
    state_dir.mkdir(parents=True, exist_ok=True)
    raw = load_config(config_file).model_dump(mode="json") if config_file else default_demo_config()
    raw.setdefault("gateway", {})
    raw["gateway"]["listen"] = f"127.0.0.1:{port}"
    raw["gateway"]["state_dir"] = str(state_dir)
    raw.setdefault("store", {})["url"] = f"sqlite+aiosqlite:///{state_dir / 'verbund.db'}"
    _training_defaults(raw)
    config = parse_config(raw, str(config_file or "demo.toml"))
    ensure_port_free("127.0.0.1", port)

    url = f"http://127.0.0.1:{port}"
    own_auth = (raw.get("auth") or {}).get("oidc")
    idp = None if own_auth else _prepare_idp(raw, state_dir, url)
    if idp is not None:
        config = parse_config(raw, str(config_file or "demo.toml"))

    print(
        "Starting model servers (llama.cpp: SmolLM2; MLServer: scikit-learn; KServe: "
        "PyTorch, ONNX, Keras) ...",
        flush=True,
    )
    started = time.monotonic()
    config, servers = launch_backends(config, state_dir)
    helpers: list[ModelServer] = []  # processes beside the model servers
    agents: list[ModelServer] = []  # a site agent per site
    try:
        if idp is not None:  # the demo identity provider: a real OpenID provider on Node.js
            argv, env = demo_idp.command(idp.config_path)
            proc, log_path = _spawn(argv, state_dir / "logs" / "idp.log", env=env)
            ready = "/.well-known/openid-configuration"
            helpers.append(ModelServer("identity-provider", idp.port, proc, log_path, ready))
        launches = {b.name: b.launch for s in config.sites for b in s.backends if b.launch}
        within = max((lc.ready_timeout for lc in launches.values()), default=180)
        awaited = [s for s in servers if launches[s.backend].await_ready]
        launched = config  # with its backends, as demo.toml describes the sites
        # one site agent per site; the access point learns the backends from them
        config, planned = plan_agents(config, state_dir, free_port)
        for a in planned:
            proc, log_path = _spawn(a.argv, state_dir / "logs" / f"agent-{a.site}.log", env=a.env)
            agents.append(
                ModelServer(f"agent-{a.site}", a.port, proc, log_path, "/healthz", a.auth)
            )
        await wait_ready([*awaited, *helpers, *agents], within=within)
        joining = [s for s in servers if s not in awaited]
        for s in joining:  # it must at least still run (its agent announces it when ready)
            if s.process.poll() is not None:
                raise DemoError(f"Model server {s.backend} exited; see {s.log_path}.")
        admin_key = _admin_key(state_dir)
        keys = await _demo_keys(config, state_dir)
        info: dict[str, Any] = {
            "url": url,
            "admin_key": admin_key,
            "keys": keys,
            "backends": {
                s.backend: {"url": s.url, "pid": s.process.pid, "ready_seconds": s.ready_seconds}
                for s in servers
            },
            "sites": {
                a.site: {"agent_url": a.url, "operator_key": a.operator_key, "pid": p.process.pid}
                for a, p in zip(planned, agents, strict=True)
            },
            "pid": os.getpid(),
        }
        if idp is not None:
            info["console"] = f"{url}/console"
            info["people"] = idp.people_info()
            info["identity_provider"] = {"issuer": idp.issuer, "pid": helpers[0].process.pid}
        app = create_app(config, admin_key=admin_key)
        catalogues = app.state.services.health.catalogues
        server = make_server(app, "127.0.0.1", port, log_level="warning")

        async def announce() -> None:
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for this
                await asyncio.sleep(0.05)
            with contextlib.suppress(TimeoutError):  # each site's catalogue, as announced
                async with asyncio.timeout(15):
                    while any(s.stale for s in catalogues.sites.values()):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
            _write_private(state_dir / "demo.json", json.dumps(info, indent=2))
            print(f"\nVerbund demo federation ready in {time.monotonic() - started:.1f}s at {url}")
            for site in app.state.services.federation:
                print(
                    f"  site {site.name:8} region {site.region:3} max_data_class "
                    f"{site.max_data_class.value:12} agent {site.config.agent_url} "
                    f"(ingress {site.config.ingress}) backends "
                    + ", ".join(b.url for b in site.backends)
                )
            for line in model_lines(launched):
                print(line)
            for a in planned:
                print(f"  operator key for {a.site}: {a.operator_key}")
            print(
                "  model servers ready after (s): "
                + ", ".join(f"{s.backend} {s.ready_seconds}" for s in servers)
            )
            print(f"  admin key: {admin_key}")
            for inst, key in keys.items():
                print(f"  key for {inst}: {key}")
            if idp is not None:
                print(f"  console: {url}/console (sign in with a demo person:)")
                for login, p in info["people"].items():
                    print(f"    {login:6} password {p['password']:14} {p['role']} of "
                          + (p.get("site") or p["institution"]))  # fmt: skip
            print(f"  written to {state_dir / 'demo.json'}\n  Ctrl-C stops everything.", flush=True)

        announcer = asyncio.create_task(announce())
        try:
            await server.serve()
        finally:
            announcer.cancel()
    finally:
        children = [*agents, *servers, *helpers]  # the agents first: they use the servers
        for s in children:  # all at once: each one's shutdown overlaps the others'
            if s.process.poll() is None:
                s.process.terminate()
        for s in children:
            s.stop()


def model_lines(config: FederationConfig) -> list[str]:
    """What ``verbund up`` prints of each model: kind, framework, licence and sites."""
    models = {m.name: m for m in config.models}
    lines = []
    for model in config.models:
        where = [s.name for s in config.sites if any(model.name in b.models for b in s.backends)]
        lines.append(
            f"  model {model.name:18} {model.kind:9} {model.framework or '-':12} "
            f"{inherited_license(model, models) or '-':11} at {', '.join(where) or '-'}"
        )
    return lines


DEMO_OIDC_SECRET_ENV = "VERBUND_DEMO_OIDC_SECRET"  # noqa: S105 (a variable's name)


def _prepare_idp(raw: dict[str, Any], state_dir: Path, url: str) -> demo_idp.DemoIdp | None:
    """The demo identity provider's config, and ``[auth.oidc]`` pointing at it (in
    ``raw``); None when Node.js or oidc-provider is missing (the demo runs without
    sign-in then, and says so)."""
    sites = [str(s["name"]) for s in raw.get("sites", [])]
    try:
        demo_idp.command(Path("idp.json"))
    except RuntimeError as exc:
        print(f"No sign-in for people: {exc}", flush=True)
        return None
    idp = demo_idp.DemoIdp.prepare(state_dir, free_port(), url, sites[0] if sites else "")
    os.environ[DEMO_OIDC_SECRET_ENV] = idp.client_secret  # read by this process's access point
    institutions = [str(i["id"]) for i in raw.get("institutions", [])]
    raw["auth"] = {"oidc": [idp.settings(DEMO_OIDC_SECRET_ENV, institutions, sites)]}
    return idp


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
