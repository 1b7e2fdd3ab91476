from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli.conftest import TARGET, Cli
from verbund.audit import GENESIS, entry_hash


def chain(n: int) -> list[dict[str, Any]]:
    """N entries linked like the audit log links them."""
    out: list[dict[str, Any]] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        ts, target = 1700000000.0 + seq, f"key_{seq}"
        hash_ = entry_hash(prev, ts, "admin", "key.create", target, "", "{}")
        out.append({"seq": seq, "ts": ts, "actor": "admin", "action": "key.create",
                    "target": target, "before": "", "after": "{}", "prev_hash": prev,
                    "hash": hash_})  # fmt: skip
        prev = hash_
    return out


def test_export_pages_then_verify_the_file_offline(cli: Cli, tmp_path: Path) -> None:
    entries = chain(3)
    pages = {0: entries[:2], 2: entries[2:], 3: []}
    cli.api.routes[("GET", "/admin/audit")] = lambda kw: {"data": pages[kw["params"]["after"]]}
    r = cli("audit", "export", *TARGET)
    assert r.exit_code == 0, r.output
    export = tmp_path / "audit.jsonl"
    export.write_text(r.stdout)
    r = cli("audit", "verify", "--file", str(export))  # no target: offline
    assert (r.exit_code, r.stdout) == (0, "audit log OK: 3 entries, chain intact\n")

    changed = [json.loads(line) for line in export.read_text().splitlines()]
    changed[1]["target"] = "key_x"
    export.write_text("".join(json.dumps(e) + "\n" for e in changed))
    r = cli("audit", "verify", "--file", str(export))
    assert r.exit_code == 2
    assert "BROKEN at entry 2: entry was changed" in r.stderr


def test_verify_asks_the_access_point(cli: Cli) -> None:
    cli.api.routes[("GET", "/admin/audit/verify")] = {
        "ok": False,
        "entries": 9,
        "first_broken": 4,
        "reason": "previous hash does not match",
    }
    r = cli("audit", "verify", *TARGET)
    assert r.exit_code == 2
    assert "audit log BROKEN at entry 4: previous hash does not match" in r.stderr


def test_verify_refuses_a_file_that_is_no_export(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "x.jsonl"
    f.write_text("hello\n")
    r = cli("audit", "verify", "--file", str(f))
    assert r.exit_code == 1
    assert "not an audit export" in r.stderr
