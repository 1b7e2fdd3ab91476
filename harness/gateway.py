"""``verbund gateway --config F`` as a process: its config written, its readiness awaited,
an admin client and API keys."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from harness.polling import poll
from harness.processes import ConfiguredServer, Process, child_env

ADMIN_KEY = "vbadmin-harness-0123456789abcdef"


def gateway_argv(config: Path, *args: str, log_level: str = "warning") -> list[str]:
    """The command line of one access point process."""
    return [
        sys.executable, "-m", "verbund.cli", "gateway",
        "--config", str(config), "--log-level", log_level, *args,
    ]  # fmt: skip


class GatewayProcess(ConfiguredServer):
    """An access point process for ``config`` (a federation dict), with its files in ``work``.

    ``config["gateway"]["listen"]`` says where it listens. Writing the config, starting,
    restarting (``start`` again after ``kill``) and stopping all go through here.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        work: Path,
        *,
        admin_key: str = ADMIN_KEY,
        args: Sequence[str] = (),
        log_level: str = "warning",
        python: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
        new_session: bool = True,
        name: str = "gateway",
    ) -> None:
        super().__init__(config, work, work / "federation.toml")
        self.admin_key = admin_key
        self.log = work / f"{name}.log"
        self.key = ""  # the API key :meth:`serve` made
        self.url = f"http://{config['gateway']['listen']}"
        argv = gateway_argv(self.config_path, *args, log_level=log_level)
        argv[1:1] = python  # options of the interpreter, e.g. -m cProfile -o F
        self.process = Process(
            name,
            argv,
            self.log,
            env=child_env({"VERBUND_ADMIN_KEY": admin_key, **(env or {})}),
            cwd=work,
            new_session=new_session,  # --workers N: signals reach every worker
        )

    def start(self, within: float = 60.0, path: str = "/readyz") -> GatewayProcess:
        """Launch and wait until ``path`` answers 200 (stopped again if it does not)."""
        return self.launch().wait_ready(within, path)

    def wait_ready(self, within: float = 60.0, path: str = "/readyz") -> GatewayProcess:
        self.process.wait_http(self.url + path, within)
        return self

    def serve(self, institution: str = "uni-a", within: float = 60.0) -> GatewayProcess:
        """Start, wait until every backend is healthy, and make a key (:attr:`key`)."""
        self.start(within)
        poll(
            lambda: all(b["healthy"] for b in self.backends().values()),
            "every backend to be healthy",
            within,
            every=0.1,
        )
        self.key = self.create_key(institution, "harness")["key"]
        return self

    def client(self) -> httpx.Client:
        """A client of the admin API (close it, or use it as a context manager)."""
        return httpx.Client(
            base_url=self.url,
            trust_env=False,
            timeout=30,
            headers={"authorization": f"Bearer {self.admin_key}"},
        )

    def admin(self, method: str, path: str, **kw: Any) -> Any:
        """One admin API call; its JSON answer (HTTP errors raise)."""
        with self.client() as c:
            r = c.request(method, path, **kw)
        r.raise_for_status()
        return r.json()

    def create_key(self, institution: str, name: str = "test") -> dict[str, Any]:
        created: dict[str, Any] = self.admin(
            "POST", "/admin/keys", json={"institution": institution, "name": name}
        )
        return created

    def backends(self) -> dict[str, dict[str, Any]]:
        """Backend name -> the admin API's view (healthy, ejected, outstanding, ...)."""
        sites = self.admin("GET", "/admin/sites")["sites"]
        return {b["name"]: b for s in sites for b in s.get("backends", [])}
