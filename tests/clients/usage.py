"""Usage records at the access point, as its admin API reports them: the proof that a
client's request went through Verbund and was accounted."""

from __future__ import annotations

from typing import Any

from harness.demo import Demo


def usage_rows(demo: Demo, group_by: str, since: float) -> list[dict[str, Any]]:
    with demo.admin() as admin:
        resp = admin.get("/admin/usage", params={"group_by": group_by, "since": since})
        resp.raise_for_status()
        rows: list[dict[str, Any]] = resp.json()["data"]
        return rows
