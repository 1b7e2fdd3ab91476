from __future__ import annotations

import json

import pytest

from tests.cli.conftest import TARGET, Cli
from verbund.cli._accounting import parse_time

SETTLEMENT = {
    "month": "2025-01",
    "period": {"from": "2025-01-01", "until": "2025-02-01"},
    "currency": "EUR",
    "inputs": {"requests": 4, "sha256": "ab" * 32},
    "usage": [
        {
            "institution": "uni-a",
            "partner_site": "west",
            "site": "sued",
            "requests": 1,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost": "1.60",
        }
    ],
    "delivered": [],
    "balances": [],
    "sites": [],
    "unassigned": ["ost"],
}


def test_usage_passes_the_period_and_institution(cli: Cli) -> None:
    cli.api.routes[("GET", "/admin/usage")] = {"group_by": ["month"], "data": []}
    r = cli("usage", "--group-by", "month", "--since", "2025-01", "--until", "2025-02-01",
            "--institution", "uni-a", *TARGET)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert cli.api.calls[0][2]["params"] == {
        "group_by": "month",
        "since": 1735689600.0,
        "until": 1738368000.0,
        "institution": "uni-a",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1700000000", 1700000000.0), ("2025-01", 1735689600.0),
     ("2025-01-01T01:00:00+01:00", 1735689600.0), (None, None)],
)  # fmt: skip
def test_times_take_unix_months_and_iso(value: str | None, expected: float | None) -> None:
    assert parse_time(value) == expected


def test_a_bad_time_names_the_option(cli: Cli) -> None:
    r = cli("usage", "--until", "soon", *TARGET)
    assert r.exit_code == 1
    assert "--until: expected an ISO date" in r.stderr


def test_settle_table_has_a_heading_per_section(cli: Cli) -> None:
    cli.api.routes[("GET", "/admin/settlement")] = SETTLEMENT
    r = cli("settle", "--month", "2025-01", *TARGET)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("Settlement 2025-01 (2025-01-01 to 2025-02-01), EUR; 4 requests")
    assert [x for x in lines if x.endswith(":")] == ["usage:", "delivered:", "balances:", "sites:"]
    assert lines[-1] == "no partner site (not in balances): ost"


def test_settle_csv_marks_sections_and_json_picks_one(cli: Cli) -> None:
    cli.api.routes[("GET", "/admin/settlement")] = SETTLEMENT
    r = cli("settle", "--month", "2025-01", "--format", "csv", *TARGET)
    assert r.stdout.splitlines()[:3] == [
        "# usage",
        "institution,partner_site,site,requests,prompt_tokens,completion_tokens,cost",
        "uni-a,west,sued,1,10,5,1.60",
    ]
    r = cli("settle", "--month", "2025-01", "--format", "json", "--section", "usage", *TARGET)
    assert json.loads(r.stdout) == SETTLEMENT["usage"]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--month", "jan"], "--month: expected YYYY-MM"),
     (["--month", "2025-01", "--section", "x"], "--section must be all or one of")],
)  # fmt: skip
def test_settle_checks_its_options_first(cli: Cli, args: list[str], message: str) -> None:
    r = cli("settle", *args, *TARGET)
    assert r.exit_code == 1
    assert message in r.stderr
    assert cli.api.calls == []


def test_usage_with_node_time_shows_the_sites_cost(cli: Cli) -> None:
    cli.api.routes[("GET", "/admin/usage")] = {
        "group_by": ["institution"],
        "data": [],
        "node_time": [
            {"site": "hpc", "model": "smol-od", "cpu_seconds": 120.5, "gpu_seconds": 0.0,
             "hours": 1}
        ],
    }  # fmt: skip
    r = cli("usage", "--node-time", "--format", "json", *TARGET)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == cli.api.routes[("GET", "/admin/usage")]["node_time"]
    r = cli("usage", "--node-time", *TARGET)
    assert "smol-od" in r.stdout and "120.5" in r.stdout
    refused = cli("usage", "--node-time", "--institution", "uni-a", *TARGET)
    assert refused.exit_code == 1
