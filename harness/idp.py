"""The real demo OpenID provider (npm ``oidc-provider`` on Node.js) as a test process.

:class:`Idp` writes the provider's config (its signing keys, Verbund as a client, the
demo people), starts it on 127.0.0.1 and waits for its discovery document. Tests reach
its private signing keys (to craft tokens the way only the provider could) and can
rotate them: :meth:`Idp.rotate_keys` restarts it on the same port signing with a new
key, the old one still published.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.ports import free_port
from harness.processes import Process, child_env
from verbund.demo_idp import (
    CLIENT_ID,
    DemoPerson,
    command,
    demo_people,
    idp_config,
    new_signing_key,
    provider_settings,
)

SECRET_ENV = "VERBUND_OIDC_CLIENT_SECRET"  # noqa: S105 (the variable's name)


class Idp:
    def __init__(
        self,
        work: Path,
        redirect_base: list[str],
        *,
        operated_site: str = "west",
        people: list[DemoPerson] | None = None,
        port: int | None = None,
    ) -> None:
        self.work = work
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.client_id = CLIENT_ID
        self.client_secret = secrets.token_urlsafe(24)
        self.people = {p.login: p for p in (people or demo_people(operated_site))}
        self.keys = [new_signing_key()]
        self.redirect_base = list(redirect_base)
        self.config_path = work / "idp.json"
        self.process: Process | None = None

    def person(self, login: str) -> DemoPerson:
        return self.people[login]

    def settings(self, institutions: list[str], sites: list[str]) -> dict[str, Any]:
        """``[auth.oidc]`` for an access point that trusts this provider."""
        return provider_settings(self.issuer, SECRET_ENV, institutions, sites)

    def env(self) -> dict[str, str]:
        """What an access point's environment needs (the client secret)."""
        return {SECRET_ENV: self.client_secret}

    def start(self, within: float = 30.0) -> Idp:
        self.work.mkdir(parents=True, exist_ok=True)
        config = idp_config(
            self.issuer,
            self.port,
            redirect_base=self.redirect_base,
            client_secret=self.client_secret,
            people=list(self.people.values()),
            keys=self.keys,
        )
        self.config_path.write_text(json.dumps(config))
        argv, extra = command(self.config_path)
        self.process = Process("idp", argv, self.work / "idp.log", env=child_env(extra))
        self.process.start()
        self.process.wait_http(self.issuer + "/.well-known/openid-configuration", within)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def rotate_keys(self) -> dict[str, Any]:
        """Sign with a new key from now on (the old one stays published for tokens it
        signed); the provider restarts on the same port. Returns the new key."""
        key = new_signing_key()
        self.keys = [key, *self.keys]
        self.stop()
        self.start()
        return key

    @property
    def signing_key(self) -> dict[str, Any]:
        return self.keys[0]

    def __enter__(self) -> Idp:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
