"""Settlement: numbers checked against values computed by hand; deterministic; via the API."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.accounting.conftest import insert, usage
from tests.conftest import GatewayFactory, federation_dict
from verbund.accounting import UsageLine, load_lines, parse_month, settle
from verbund.config import FederationConfig, parse_config

CHAT, EMB = "/v1/chat/completions", "/v1/embeddings"


def config(state_dir: Path) -> FederationConfig:
    """west (NW) and sued (BY) publish prices, ost (SN) does not; four institutions."""
    data = federation_dict(state_dir)
    west, sued, _ost = data["sites"]
    west["prices"] = {
        "currency": "EUR",
        "models": {
            "smol": {"input_per_million": 0.5, "output_per_million": 1.5, "per_inference": 0.001},
            "*": {"input_per_million": 0.1},
        },
    }
    sued["prices"] = {
        "models": {
            "smol": {"input_per_million": 0.4, "output_per_million": 1.2},
            "emb": {"input_per_million": 0.02, "per_inference": 0.0005},
        }
    }
    data["models"].append({"name": "big", "kind": "chat"})
    data["institutions"] = [
        {"id": "uni-a", "home_region": "NW"},  # partner: west, the one site in NW
        {"id": "uni-b", "home_region": "BY"},  # partner: sued
        {"id": "uni-c", "home_region": "BY", "partner_site": "west"},
        {"id": "uni-d", "home_region": "HE"},  # no site in HE: no partner
    ]
    return parse_config(data)


LINES = [
    # uni-a at home (west), in two lines that merge: 1,000,000 in, 200,000 out, 10 requests
    # 0.50 + 0.30 + 10 x 0.001 = 0.81
    UsageLine("uni-a", "west", "smol", CHAT, 6, 600_000, 120_000),
    UsageLine("uni-a", "west", "smol", CHAT, 4, 400_000, 80_000),
    # uni-a at sued: 300,000 x 0.4/M + 100,000 x 1.2/M = 0.12 + 0.12 = 0.24 (sued -> west)
    UsageLine("uni-a", "sued", "smol", CHAT, 4, 300_000, 100_000),
    # uni-b at west: 2,000,000 x 0.5/M + 1,000,000 x 1.5/M + 3 x 0.001 = 2.503 (west -> sued)
    UsageLine("uni-b", "west", "smol", CHAT, 3, 2_000_000, 1_000_000),
    # uni-b at home: 5,000,000 x 0.02/M + 1000 x 0.0005 = 0.10 + 0.50 = 0.60
    UsageLine("uni-b", "sued", "emb", EMB, 1000, 5_000_000, 0),
    # uni-c (partner west) at sued: 12,500 x 0.4/M = 0.005 and 10 x 0.0005 = 0.005
    # (rounded one by one that would be 0.02; exact it is 0.01)
    UsageLine("uni-c", "sued", "smol", CHAT, 1, 12_500, 0),
    UsageLine("uni-c", "sued", "emb", EMB, 10, 0, 0),
    # uni-c at west, model priced by "*": 10,000 x 0.1/M = 0.001
    UsageLine("uni-c", "west", "big", CHAT, 1, 10_000, 0),
    # uni-d at ost, which has no prices: free, and uni-d has no partner
    UsageLine("uni-d", "ost", "smol", CHAT, 5, 999, 0),
]


def statement(cfg: FederationConfig, lines: list[UsageLine]) -> dict[str, Any]:
    return settle("2025-01", lines, list(cfg.sites), list(cfg.institutions))


def test_statement_matches_hand_computed_values(tmp_path: Path) -> None:
    st = statement(config(tmp_path), LINES)
    assert st["month"] == "2025-01" and st["currency"] == "EUR"
    assert st["period"] == {"from": "2025-01-01T00:00:00Z", "until": "2025-02-01T00:00:00Z"}
    assert st["inputs"]["lines"] == 8 and st["inputs"]["requests"] == 1034
    usage_rows = [
        (u["institution"], u["partner_site"], u["site"], u["requests"], u["cost"])
        for u in st["usage"]
    ]
    assert usage_rows == [
        ("uni-a", "west", "sued", 4, "0.24"),
        ("uni-a", "west", "west", 10, "0.81"),
        ("uni-b", "sued", "sued", 1000, "0.60"),
        ("uni-b", "sued", "west", 3, "2.50"),
        ("uni-c", "west", "sued", 11, "0.01"),
        ("uni-c", "west", "west", 1, "0.00"),
        ("uni-d", None, "ost", 5, "0.00"),
    ]
    assert st["usage"][1]["prompt_tokens"] == 1_000_000
    assert st["usage"][1]["completion_tokens"] == 200_000
    delivered = [
        (d["site"], d["site_region"], d["to_region"], d["requests"], d["value"])
        for d in st["delivered"]
    ]
    assert delivered == [
        ("ost", "SN", "HE", 5, "0.00"),
        ("sued", "BY", "NW", 4, "0.24"),  # uni-c is from BY: its use of sued is not here
        ("west", "NW", "BY", 4, "2.50"),  # 2.503 + 0.001
    ]
    assert st["delivered"][2]["prompt_tokens"] == 2_010_000
    assert st["balances"] == [
        {
            "site_a": "sued",
            "site_b": "west",
            "a_to_b": "0.25",  # 0.24 + 0.005 + 0.005
            "b_to_a": "2.50",  # 2.503
            "net": "-2.25",  # -2.253
            "payer": "sued",
            "payee": "west",
            "amount": "2.25",
        }
    ]
    assert st["sites"] == [
        {
            "site": "ost",
            "delivered": "0.00",
            "to_other_partners": "0.00",
            "from_other_partners": "0.00",
            "net": "0.00",
        },
        {
            "site": "sued",
            "delivered": "0.85",
            "to_other_partners": "0.25",
            "from_other_partners": "2.50",
            "net": "-2.25",
        },
        {
            "site": "west",
            "delivered": "3.31",  # 0.81 + 2.503 + 0.001
            "to_other_partners": "2.50",
            "from_other_partners": "0.25",
            "net": "2.25",
        },
    ]
    assert st["unassigned"] == ["uni-d"]


def test_statement_is_deterministic_and_fingerprints_its_inputs(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    first = statement(cfg, LINES)
    shuffled = LINES[:]
    random.Random(7).shuffle(shuffled)
    assert statement(cfg, shuffled) == first
    changed = [*LINES[:-1], UsageLine("uni-d", "ost", "smol", CHAT, 5, 1000, 0)]
    assert statement(cfg, changed)["inputs"]["sha256"] != first["inputs"]["sha256"]


def test_half_cents_round_up_only_at_the_end(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    # 0.005 exact: rounds half up to 0.01 (banker's rounding would give 0.00)
    st = statement(cfg, [UsageLine("uni-c", "sued", "smol", CHAT, 1, 12_500, 0)])
    assert st["usage"][0]["cost"] == "0.01"
    assert st["balances"][0]["a_to_b"] == "0.01"


async def test_only_billable_records_of_the_month_count(store: Any) -> None:
    def ts(iso: str) -> float:
        return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()

    await insert(
        store,
        usage(ts("2025-01-10T10:00:00"), prompt=100, completion=10),
        usage(ts("2025-01-10T11:00:00"), prompt=50, completion=0, status="incomplete"),
        usage(ts("2025-01-10T12:00:00"), prompt=999, status="error"),
        usage(ts("2025-01-10T12:00:00"), site="", prompt=0, completion=0, status="rejected"),
        usage(ts("2024-12-31T23:59:59"), prompt=7),
        usage(ts("2025-02-01T00:00:00"), prompt=7),
    )
    lines = await load_lines(store, *parse_month("2025-01"))
    assert lines == [UsageLine("uni-a", "west", "smol", CHAT, 2, 150, 10)]


async def test_admin_settlement_route(gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    jan = datetime(2025, 1, 15, tzinfo=UTC).timestamp()
    async with gateway_factory(cfg) as gw:
        for ln in LINES:
            for i in range(ln.requests):
                # spread each line's tokens over its requests, the remainder on the first
                share = (
                    ln.prompt_tokens // ln.requests
                    + (ln.prompt_tokens % ln.requests if i == 0 else 0),
                    ln.completion_tokens // ln.requests
                    + (ln.completion_tokens % ln.requests if i == 0 else 0),
                )
                gw.services.accounting.spool.record(
                    usage(
                        jan,
                        ln.institution,
                        ln.site,
                        ln.model,
                        prompt=share[0],
                        completion=share[1],
                        endpoint=ln.endpoint,
                    )
                )
        r = await gw.client.get(
            "/admin/settlement", params={"month": "2025-01"}, headers=gw.admin()
        )
        assert r.status_code == 200
        assert r.json() == {**statement(cfg, LINES), "node_time": []}  # no jobs here
        empty = await gw.client.get(
            "/admin/settlement", params={"month": "2024-12"}, headers=gw.admin()
        )
        assert empty.json()["usage"] == [] and empty.json()["balances"] == []
        bad = await gw.client.get(
            "/admin/settlement", params={"month": "January"}, headers=gw.admin()
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "month"
        denied = await gw.client.get(
            "/admin/settlement", params={"month": "2025-01"}, headers=gw.auth()
        )
        assert denied.status_code == 403
