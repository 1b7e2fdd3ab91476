"""The demo's identity provider: the certified npm ``oidc-provider`` run with the
machine's Node.js (``server.mjs`` beside this file; installed into ``.node-idp/`` by
``scripts/_idp_env.sh``), with a login page and a few demo people.

``verbund up`` starts it for the demo and the tests start it through ``harness/idp.py``;
it is a real OpenID provider (discovery, JWKS, PKCE, RP-initiated logout), only its
people are made up. This module writes its config and names its command.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from joserfc.jwk import RSAKey

__all__ = [
    "CLIENT_ID",
    "ENTITLEMENT_PREFIX",
    "SERVER",
    "DemoIdp",
    "DemoPerson",
    "command",
    "demo_people",
    "idp_config",
    "modules_dir",
    "new_signing_key",
    "provider_settings",
]

SERVER = Path(__file__).with_name("server.mjs")
CLIENT_ID = "verbund"
ENTITLEMENT_PREFIX = "urn:mace:dir:entitlement:verbund:"  # eduPersonEntitlement values


@dataclass(frozen=True, slots=True)
class DemoPerson:
    login: str
    password: str
    institution: str  # the schac_home_organization released for them
    role: str  # what their entitlement maps to ("member": none)
    name: str
    site: str = ""  # a site_operator's site
    sub: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def entitlements(self) -> list[str]:
        if self.role == "member":
            return []
        suffix = f"site_operator:{self.site}" if self.role == "site_operator" else self.role
        return [ENTITLEMENT_PREFIX + suffix]

    def claims(self, domain: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "preferred_username": self.login,
            "email": f"{self.login}@{self.institution}.{domain}",
            "email_verified": True,
            "schac_home_organization": f"{self.institution}.{domain}",
            "eduperson_entitlement": self.entitlements,
        }


def demo_people(site: str, password: str | None = None) -> list[DemoPerson]:
    """A member and an admin of uni-a, a member of uni-b, the operator of ``site``, an
    auditor. Passwords are random unless given (one for all)."""

    def pw() -> str:
        return password or secrets.token_urlsafe(9)

    return [
        DemoPerson("ada", pw(), "uni-a", "member", "Ada Lovelace"),
        DemoPerson("grace", pw(), "uni-a", "institution_admin", "Grace Hopper"),
        DemoPerson("linus", pw(), "uni-b", "member", "Linus Pauling"),
        DemoPerson("olga", pw(), "uni-b", "site_operator", "Olga Taussky", site=site),
        DemoPerson("alan", pw(), "uni-a", "auditor", "Alan Turing"),
    ]


def new_signing_key() -> dict[str, Any]:
    """A fresh RS256 signing key (private JWK) with a random key id."""
    key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(6)}, private=True)
    jwk = key.as_dict(private=True)
    jwk.update(use="sig", alg="RS256")
    return jwk


def idp_config(
    issuer: str,
    port: int,
    *,
    redirect_base: list[str],
    client_secret: str,
    people: list[DemoPerson],
    keys: list[dict[str, Any]],
    domain: str = "example",
) -> dict[str, Any]:
    """The server's config: one client (Verbund) for each access point address in
    ``redirect_base`` (e.g. ``http://127.0.0.1:8080``)."""
    return {
        "issuer": issuer,
        "port": port,
        "keys": keys,
        "cookie_keys": [secrets.token_urlsafe(24)],
        "clients": [
            {
                "client_id": CLIENT_ID,
                "client_secret": client_secret,
                "redirect_uris": [b + "/auth/callback" for b in redirect_base],
                "post_logout_redirect_uris": [b + "/auth/signed-out" for b in redirect_base],
            }
        ],
        "people": {
            p.login: {"password": p.password, "sub": p.sub, "claims": p.claims(domain)}
            for p in people
        },
    }


def provider_settings(
    issuer: str,
    secret_env: str,
    institutions: list[str],
    sites: list[str],
    domain: str = "example",
) -> dict[str, Any]:
    """The ``[auth.oidc]`` table that points an access point at this provider."""
    roles = {
        ENTITLEMENT_PREFIX + r: r for r in ("institution_admin", "auditor", "federation_admin")
    }
    roles.update({ENTITLEMENT_PREFIX + f"site_operator:{s}": f"site_operator:{s}" for s in sites})
    return {
        "name": "demo",
        "title": "Demo identity provider",
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret_env": secret_env,
        "scopes": ["openid", "profile", "email", "schac", "entitlements"],
        "institution_claim": "schac_home_organization",
        "institutions": {f"{i}.{domain}": i for i in institutions},
        "roles_claim": "eduperson_entitlement",
        "roles": roles,
    }


def modules_dir() -> Path:
    """Where ``scripts/_idp_env.sh`` installed oidc-provider (``VERBUND_IDP_MODULES``
    overrides it)."""
    env = os.environ.get("VERBUND_IDP_MODULES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / ".node-idp" / "node_modules"


def command(config_path: Path) -> tuple[list[str], dict[str, str]]:
    """The command that runs the provider, and the environment entries it needs."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("Node.js is missing; scripts/_idp_env.sh installs it.")
    modules = modules_dir()
    if not (modules / "oidc-provider").is_dir():
        raise RuntimeError(f"oidc-provider is not installed in {modules}; run scripts/_idp_env.sh")
    return [node, str(SERVER), str(config_path)], {"VERBUND_IDP_MODULES": str(modules)}


@dataclass
class DemoIdp:
    """The demo's provider, prepared in a state directory: its config written, its
    people's passwords kept there (the same across restarts of the demo)."""

    port: int
    people: list[DemoPerson]
    client_secret: str
    config_path: Path

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def prepare(cls, state_dir: Path, port: int, access_point: str, site: str) -> DemoIdp:
        """Config for a provider on ``port`` trusted by the access point at
        ``access_point``; ``site`` is the one the demo's site operator runs."""
        folder = state_dir / "idp"
        folder.mkdir(parents=True, exist_ok=True)
        saved = folder / "people.json"
        people = demo_people(site)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            kept = json.loads(saved.read_text())
            people = [
                DemoPerson(**{**asdict(p), "password": kept[p.login]["password"],
                              "sub": kept[p.login]["sub"]})
                for p in people
            ]  # fmt: skip
        _write_private(saved, json.dumps({p.login: asdict(p) for p in people}))
        secret = secrets.token_urlsafe(24)
        config = idp_config(
            f"http://127.0.0.1:{port}",
            port,
            redirect_base=[access_point],
            client_secret=secret,
            people=people,
            keys=[new_signing_key()],
        )
        path = folder / "idp.json"
        _write_private(path, json.dumps(config))
        return cls(port, people, secret, path)

    def settings(
        self, secret_env: str, institutions: list[str], sites: list[str]
    ) -> dict[str, Any]:
        return provider_settings(self.issuer, secret_env, institutions, sites)

    def people_info(self) -> dict[str, dict[str, str]]:
        """``demo.json``'s ``people``: how each demo person signs in."""
        info: dict[str, dict[str, str]] = {}
        for p in self.people:
            entry = {"password": p.password, "institution": p.institution, "role": p.role}
            if p.site:
                entry["site"] = p.site
            info[p.login] = entry
        return info


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
