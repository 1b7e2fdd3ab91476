"""A small client of an access point's admin API, used by the CLI."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from verbund.errors import VerbundError

__all__ = ["AdminClient", "AdminError", "resolve_target"]


class AdminError(VerbundError):
    """The admin API could not be reached or refused the call."""


@dataclass(frozen=True)
class Target:
    url: str
    admin_key: str


def resolve_target(url: str | None, admin_key: str | None, state_dir: Path | None) -> Target:
    """--url/--admin-key, then $VERBUND_URL/$VERBUND_ADMIN_KEY, then the demo's demo.json."""
    url = url or os.environ.get("VERBUND_URL")
    admin_key = admin_key or os.environ.get("VERBUND_ADMIN_KEY")
    if not (url and admin_key):
        demo = (state_dir or Path(".verbund")) / "demo.json"
        if demo.exists():
            try:
                info = json.loads(demo.read_text())
            except ValueError:
                raise AdminError(f"{demo} is not valid JSON.") from None
            url = url or info.get("url")
            admin_key = admin_key or info.get("admin_key")
    if not url or not admin_key:
        raise AdminError(
            "Which access point? Give --url and --admin-key, set VERBUND_URL and "
            "VERBUND_ADMIN_KEY, or --state-dir of a running `verbund up`."
        )
    return Target(url.rstrip("/"), admin_key)


class AdminClient:
    def __init__(self, target: Target, timeout: float = 30.0) -> None:
        self._client = httpx.Client(
            base_url=target.url,
            headers={"authorization": f"Bearer {target.admin_key}"},
            timeout=timeout,
            trust_env=False,
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AdminError(f"Cannot reach the access point: {type(exc).__name__}.") from None
        if resp.status_code >= 400:
            try:
                msg = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                msg = resp.text[:200]
            raise AdminError(f"HTTP {resp.status_code}: {msg}")
        return resp.json()

    def close(self) -> None:
        self._client.close()
