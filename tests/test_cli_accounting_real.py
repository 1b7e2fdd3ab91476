"""The `verbund` program against a real access point process: usage, settle, audit verify."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import federation as fed
from harness.gateway import GatewayProcess
from harness.ports import free_port

pytestmark = pytest.mark.real


def prices(input_per_million: float, output_per_million: float) -> dict[str, Any]:
    per_token = {"input_per_million": input_per_million, "output_per_million": output_per_million}
    return {"currency": "EUR", "models": {"smol": per_token}}


def config(state: Path, port: int) -> dict[str, Any]:
    nowhere = "http://127.0.0.1:9"
    return fed.federation(
        "ap-cli",
        state,
        [
            fed.site(
                "west", "NW", [fed.backend("west-1", nowhere, ["smol"])], prices=prices(0.5, 1.5)
            ),
            fed.site(
                "sued", "BY", [fed.backend("sued-1", nowhere, ["smol"])], prices=prices(0.4, 1.2)
            ),
        ],
        port=port,
        models=["smol"],
        institutions=[
            fed.institution("uni-a", home_region="NW"),
            fed.institution("uni-b", home_region="BY"),
        ],
    )


@dataclass
class RunningGateway:
    process: GatewayProcess

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def db(self) -> Path:
        return Path(self.process.config["gateway"]["state_dir"]) / "verbund.db"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable, "-m", "verbund.cli", *args,
                "--url", self.url, "--admin-key", self.process.admin_key,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "NO_COLOR": "1"},
        )  # fmt: skip

    def admin(self) -> httpx.Client:
        return self.process.client()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    with GatewayProcess(config(tmp_path, free_port()), tmp_path).start(path="/healthz") as gw:
        yield RunningGateway(gw)


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def insert_usage(db: Path, rows: list[tuple[str, str, float, int, int]]) -> None:
    """(institution, site, ts, prompt, completion) rows, written as another access point would."""
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO usage_records (id, ts, request_id, access_point, institution_id, key_id,"
            " endpoint, model, site, backend, prompt_tokens, completion_tokens, status,"
            " http_status, latency_ms, ttft_ms, stream, priority, attempts, usage_estimated)"
            " VALUES (?, ?, 'r', 'ap-x', ?, 'key_1', '/v1/chat/completions', 'smol', ?, 'b',"
            " ?, ?, 'ok', 200, 1.0, NULL, 0, 'interactive', 1, 0)",
            [(uuid.uuid4().hex, t, inst, site, p, c) for inst, site, t, p, c in rows],
        )


def test_usage_by_day_and_settlement(gateway: RunningGateway) -> None:
    insert_usage(
        gateway.db,
        [
            ("uni-a", "west", ts("2025-01-31T23:00:00"), 1_000_000, 0),  # 0.50 at home
            ("uni-a", "sued", ts("2025-01-05T10:00:00"), 1_000_000, 1_000_000),  # 1.60 sued->west
            ("uni-b", "west", ts("2025-01-06T10:00:00"), 2_000_000, 0),  # 1.00 west->sued
            ("uni-b", "west", ts("2025-02-01T00:00:00"), 9, 9),  # February
        ],
    )
    r = gateway.cli(
        "usage",
        "--group-by",
        "day,institution",
        "--since",
        "2025-01",
        "--until",
        "2025-02-01",
        "--format",
        "csv",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "day,institution,requests,failed,prompt_tokens,completion_tokens,total_tokens,"
        "cpu_seconds,gpu_seconds,request_bytes,response_bytes",
        "2025-01-05,uni-a,1,0,1000000,1000000,2000000,0.0,0.0,0,0",
        "2025-01-06,uni-b,1,0,2000000,0,2000000,0.0,0.0,0,0",
        "2025-01-31,uni-a,1,0,1000000,0,1000000,0.0,0.0,0,0",
    ]
    r = gateway.cli("usage", "--group-by", "month", "--format", "json")
    assert [(x["month"], x["requests"]) for x in json.loads(r.stdout)] == [
        ("2025-01", 3),
        ("2025-02", 1),
    ]

    r = gateway.cli("settle", "--month", "2025-01", "--format", "json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["balances"] == [
        {
            "site_a": "sued",
            "site_b": "west",
            "a_to_b": "1.60",
            "b_to_a": "1.00",
            "net": "0.60",
            "payer": "west",
            "payee": "sued",
            "amount": "0.60",
        }
    ]
    r = gateway.cli("settle", "--month", "2025-01", "--format", "csv", "--section", "usage")
    assert r.stdout.splitlines() == [
        "institution,partner_site,site,requests,prompt_tokens,completion_tokens,cost",
        "uni-a,west,sued,1,1000000,1000000,1.60",
        "uni-a,west,west,1,1000000,0,0.50",
        "uni-b,sued,west,1,2000000,0,1.00",
    ]
    table = gateway.cli("settle", "--month", "2025-01").stdout
    assert "Settlement 2025-01" in table and "balances:" in table and "0.60" in table
    bad = gateway.cli("settle", "--month", "2025-13")
    assert bad.returncode != 0 and "YYYY-MM" in bad.stderr


def test_audit_verify_names_an_entry_edited_behind_the_programs_back(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    with gateway.admin() as admin:
        for name in ("moodle", "hawki", "batch"):
            admin.post(
                "/admin/keys", json={"institution": "uni-a", "name": name}
            ).raise_for_status()
        admin.post("/admin/sites/sued/drain").raise_for_status()
    ok = gateway.cli("audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "chain intact" in ok.stdout
    export = gateway.cli("audit", "export")
    entries = [json.loads(line) for line in export.stdout.splitlines()]
    assert [e["action"] for e in entries][:3] == [
        "config.load",
        "institution.create",
        "institution.create",
    ]
    assert "site.draining" in [e["action"] for e in entries]
    (tmp_path / "audit.jsonl").write_text(export.stdout)

    victim = next(e["seq"] for e in entries if e["action"] == "key.create")
    with sqlite3.connect(gateway.db) as conn:
        conn.execute("UPDATE audit_log SET target = 'key_forged' WHERE seq = ?", (victim,))
    broken = gateway.cli("audit", "verify")
    assert broken.returncode == 2
    assert f"BROKEN at entry {victim}: entry was changed" in broken.stderr

    # partners can check an export offline; the export taken before the edit is intact
    offline = subprocess.run(
        [
            sys.executable,
            "-m",
            "verbund.cli",
            "audit",
            "verify",
            "--file",
            str(tmp_path / "audit.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert offline.returncode == 0 and f"{len(entries)} entries" in offline.stdout
    entries[1]["after"] = entries[1]["after"].replace("NW", "BY")
    (tmp_path / "forged.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    offline = subprocess.run(
        [
            sys.executable,
            "-m",
            "verbund.cli",
            "audit",
            "verify",
            "--file",
            str(tmp_path / "forged.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert offline.returncode == 2 and f"entry {entries[1]['seq']}" in offline.stderr
