"""``verbund site --config site.toml`` as a process: its config written, its credentials
in its environment, its readiness awaited, and clients for an access point and an
operator.

A site config is the dict :func:`verbund.agent.parse_site_config` takes; :func:`site_toml`
builds one with the credentials every test agent has (one access point, one operator).
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from harness.federation import write_toml
from harness.polling import poll
from harness.processes import Process, child_env

AP_KEY_ENV = "VERBUND_SITE_AP_KEY"
OPERATOR_KEY_ENV = "VERBUND_SITE_OPERATOR_KEY"


def keys_for(site: str) -> dict[str, str]:
    """The harness's credentials of ``site``'s agent (access point, operator), per site
    distinct so that one site's operator key is not another's."""
    return {
        AP_KEY_ENV: f"vbsite-ap-{site}-0123456789abcdef",
        OPERATOR_KEY_ENV: f"vbsite-op-{site}-0123456789abcdef",
    }


def site_toml(
    name: str,
    listen: str,
    state_dir: Path,
    *,
    backends: Sequence[Mapping[str, Any]] = (),
    models: Sequence[Mapping[str, Any]] = (),
    site: Mapping[str, Any] | None = None,
    agent: Mapping[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A site.toml as a dict: ``[site]``, ``[agent]``, one access point, one operator."""
    return {
        "site": {"name": name, "region": "NW", "jurisdiction": "DE", **(site or {})},
        "agent": {"listen": listen, "state_dir": str(state_dir), **(agent or {})},
        "access_points": [{"name": "ap", "key_env": AP_KEY_ENV}],
        "operators": [{"name": f"op-{name}", "key_env": OPERATOR_KEY_ENV}],
        "backends": [dict(b) for b in backends],
        "models": [dict(m) for m in models],
        **sections,
    }


def agent_argv(config: Path, log_level: str = "warning") -> list[str]:
    return [
        sys.executable, "-m", "verbund.cli", "site",
        "--config", str(config), "--log-level", log_level,
    ]  # fmt: skip


class AgentProcess:
    """A site agent process for ``config`` (a site.toml dict), with its files in ``work``.

    ``url`` is where access points reach it (``https://`` when the config has TLS);
    ``verify`` is the TLS context its clients use then (CA, and a client certificate for
    mutual TLS).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        work: Path,
        *,
        keys: Mapping[str, str] | None = None,
        env: Mapping[str, str | None] | None = None,
        log_level: str = "warning",
        netns: Sequence[str] = (),
        verify: ssl.SSLContext | bool = False,
    ) -> None:
        self.config = config
        self.work = work
        self.site = str(config["site"]["name"])
        self.keys = dict(keys or keys_for(self.site))
        self.config_path = work / f"site-{self.site}.toml"
        self.log = work / f"agent-{self.site}.log"
        tls = bool(config.get("agent", {}).get("tls_cert"))
        self.url = f"{'https' if tls else 'http'}://{config['agent']['listen']}"
        self.verify = verify
        self.process = Process(
            f"agent-{self.site}",
            [*netns, *agent_argv(self.config_path, log_level)],
            self.log,
            env=child_env({**self.keys, **(env or {})}),
            cwd=work,
            new_session=True,
        )

    @property
    def ap_key(self) -> str:
        return self.keys[AP_KEY_ENV]

    @property
    def operator_key(self) -> str:
        return self.keys[OPERATOR_KEY_ENV]

    def launch(self) -> AgentProcess:
        self.work.mkdir(parents=True, exist_ok=True)
        write_toml(self.config, self.config_path)
        self.process.start()
        return self

    def start(self, within: float = 60.0) -> AgentProcess:
        return self.launch().wait_ready(within)

    def wait_ready(self, within: float = 60.0) -> AgentProcess:
        def answers() -> bool:
            self.process.check()
            try:
                with self.client() as c:
                    return c.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        try:
            poll(answers, f"site agent {self.site} at {self.url}", within, every=0.1)
        except BaseException:
            self.process.stop()
            raise
        return self

    def client(self, key: str | None = None) -> httpx.Client:
        """A client with the access point's credential (or ``key``)."""
        return httpx.Client(
            base_url=self.url,
            trust_env=False,
            timeout=30,
            verify=self.verify,
            headers={"authorization": f"Bearer {key or self.ap_key}"},
        )

    def kill(self) -> float:
        return self.process.kill()

    def stop(self, within: float = 20.0) -> int | None:
        return self.process.stop(within)

    def __enter__(self) -> AgentProcess:
        return self if self.process.started else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
