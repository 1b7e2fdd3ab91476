"""Two access points (one with two workers) on a real PostgreSQL write one audit chain
at once; partners sign checkpoints with `verbund audit checkpoint` and keep them; the
database owner deletes the newest entries and the checkpoints in its store, and
`verbund audit verify --checkpoints` names what is missing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from harness import federation as fed
from harness.gateway import ADMIN_KEY, GatewayProcess
from harness.ports import free_port
from harness.processes import child_env
from harness.services import Postgres
from verbund.store import Store
from verbund.trust import generate_key_file

pytestmark = pytest.mark.real


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verbund.cli", *args],
        env=child_env({"VERBUND_ADMIN_KEY": ADMIN_KEY}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _delete_newest(url: str, n: int) -> None:
    store = Store(url)
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "DELETE FROM audit_log WHERE seq IN "
                "(SELECT seq FROM audit_log ORDER BY seq DESC LIMIT :n)"
            ),
            {"n": n},
        )
        await conn.execute(text("DELETE FROM audit_checkpoints"))
    await store.aclose()


def test_access_points_share_one_chain_and_partners_catch_truncation(
    tmp_path: Path, pg: Postgres
) -> None:
    keys = {n: generate_key_file(tmp_path / "keys" / f"{n}.pem") for n in ("ap-west", "ap-east")}
    keys["rz-west"] = generate_key_file(tmp_path / "keys" / "rz-west.pem")
    gateways = []
    for name, workers in (("ap-west", 1), ("ap-east", 2)):
        config = fed.federation(
            name,
            tmp_path / name,
            [fed.site("rz-west", "NW", [fed.backend("b1", "http://127.0.0.1:9", ["smol"])])],
            port=free_port(),
            gateway={"workers": workers},
            models=["smol"],
            institutions=[fed.institution("uni-a", home_region="NW")],
            store={"url": pg.url},
            trust={
                "signing_key_file": str(tmp_path / "keys" / f"{name}.pem"),
                "checkpoint_interval": 0,
                "partners": keys,
            },
        )
        gateways.append(GatewayProcess(config, tmp_path / name, name=name))
    west, east = gateways
    cfg = west.config_path
    keep = tmp_path / "rz-west-checkpoints"  # the site's own copies, outside the store
    try:
        west.start(path="/healthz")
        east.start(path="/healthz")
        with ThreadPoolExecutor(8) as pool:  # both access points, all workers, at once
            list(pool.map(lambda i: gateways[i % 2].create_key("uni-a", f"k{i}"), range(24)))
        ok = _cli("audit", "verify", "--url", west.url)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        signed = _cli("audit", "checkpoint", "--url", west.url, "--keep", str(keep))
        assert signed.returncode == 0, signed.stdout + signed.stderr
        for i in range(3):
            east.create_key("uni-a", f"later{i}")
        by_site = _cli(
            "audit", "checkpoint", "--url", east.url, "--keep", str(keep),
            "--key-file", str(tmp_path / "keys" / "rz-west.pem"), "--as", "rz-west",
            "--config", str(cfg),
        )  # fmt: skip
        assert by_site.returncode == 0, by_site.stdout + by_site.stderr
        head = int(by_site.stdout.split("entry #")[1].split(" ")[0])
        good = _cli(
            "audit", "verify", "--url", east.url, "--checkpoints", str(keep), "--config", str(cfg)
        )
        assert good.returncode == 0, good.stdout + good.stderr
        assert "agree with 2 signed checkpoints" in good.stdout

        asyncio.run(_delete_newest(pg.url, 2))
        plain = _cli("audit", "verify", "--url", west.url)
        assert plain.returncode == 0  # the links alone cannot tell
        caught = _cli(
            "audit", "verify", "--url", west.url, "--checkpoints", str(keep), "--config", str(cfg)
        )  # fmt: skip
        assert caught.returncode == 2, caught.stdout + caught.stderr
        out = caught.stdout + caught.stderr
        assert "truncated" in out and f"entry #{head - 1} is missing" in out
        assert "rz-west's checkpoint" in out
    finally:
        for g in gateways:
            g.stop()
