"""Countersigned usage: the sites' signed statements of what they served, beside the
access points' records; an access point that drops records shows up as a difference."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, text
from typer.testing import CliRunner

from harness.federation import write_toml
from tests.conftest import MODEL, GatewayFactory, federation_dict
from tests.trust.chain import keyring, partner
from verbund.cli import Session, app
from verbund.config import parse_config
from verbund.store import UsageRow
from verbund.trust import UsageStatement, countersign, sign_statement

SITES = {name: partner(name) for name in ("west", "sued", "ost")}
KEYS = keyring(*SITES.values())


def _metered(gw_fakes: dict[str, object], month: str) -> list[UsageStatement]:
    """Each site's statement from its own engine's counters (the fake backends' calls:
    every request here is uni-a's, 7 prompt and 4 completion tokens each)."""
    out = []
    for name, key in SITES.items():
        n = len(gw_fakes[f"{name}-1"].calls)  # type: ignore[attr-defined]
        if n:
            line = {"institution": "uni-a", "model": MODEL, "requests": n}
            line |= {"prompt_tokens": 7 * n, "completion_tokens": 4 * n}
            out.append(sign_statement(key, month, [line], time.time()))
    return out


async def test_dropped_usage_records_show_against_the_sites_statements(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    month = datetime.now(UTC).strftime("%Y-%m")
    async with gateway_factory() as gw:
        for _ in range(6):
            assert (await gw.chat()).status_code == 200
        await gw.services.accounting.spool.flush()
        statements = _metered(gw.fakes, month)
        assert statements
        admin = gw.admin()
        honest = (
            await gw.client.get("/admin/settlement", params={"month": month}, headers=admin)
        ).json()
        agreed = countersign(honest, statements, KEYS)
        assert agreed.differences == [] and agreed.statements == sorted(s.site for s in statements)

        site = statements[0].site  # the access point "forgets" two requests served there
        async with gw.services.store.session() as s, s.begin():
            ids = (
                (await s.execute(select(UsageRow.id).where(UsageRow.site == site).limit(2)))
                .scalars()
                .all()
            )
            for i in ids:
                await s.execute(text("DELETE FROM usage_records WHERE id = :i"), {"i": i})
        short = (
            await gw.client.get("/admin/settlement", params={"month": month}, headers=admin)
        ).json()
        checked = countersign(short, statements, KEYS)
        assert len(checked.differences) == 1
        d = checked.differences[0]
        assert (d["site"], d["institution"], d["missing_requests"]) == (site, "uni-a", 2)
        assert d["stated"]["prompt_tokens"] - d["recorded"]["prompt_tokens"] == 14
        assert checked.sha256 != agreed.sha256  # the fingerprint covers the records too

        # a statement edited after signing is not believed
        forged = UsageStatement(
            site,
            month,
            ({**statements[0].lines[0], "requests": 1},),
            statements[0].ts,
            statements[0].signature,
        )
        assert countersign(short, [forged], KEYS).rejected == [site]

        # the CLI: settle --month --statements DIR --config F, exit code 2 and the figures
        folder = tmp_path / "statements"
        folder.mkdir()
        for st in statements:
            (folder / f"{st.site}.json").write_text(json.dumps(st.to_json()))
        data = federation_dict(tmp_path)
        data["trust"] = {"partners": {n: k.public_b64 for n, k in SITES.items()}}
        cfg = write_toml(data, tmp_path / "f.toml")
        parse_config(data)

        class Api:
            def call(self, method: str, path: str, **kw: object) -> object:
                assert (method, path) == ("GET", "/admin/settlement")
                return json.loads(json.dumps(short))

            def close(self) -> None:
                pass

        r = CliRunner().invoke(
            app,
            ["settle", "--month", month, "--statements", str(folder), "--config", str(cfg),
             "--url", "http://ap.test", "--admin-key", "k"],
            obj=Session(lambda _t: Api()),  # type: ignore[arg-type,return-value]
        )  # fmt: skip
        assert r.exit_code == 2, r.output
        assert f"DIFFERENCE at {site} for uni-a" in r.output
        assert "the site's signed statement says" in r.output
