"""A small client of an access point's admin API, used by the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from verbund.errors import VerbundError

__all__ = ["AdminClient", "AdminError", "Target"]


class AdminError(VerbundError):
    """The admin API could not be reached or refused the call."""


@dataclass(frozen=True)
class Target:
    url: str
    admin_key: str


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
