from __future__ import annotations

import json

from tests.cli.conftest import TARGET, Cli

BACKEND = {
    "name": "west-1",
    "ejected": False,
    "healthy": True,
    "outstanding": 2,
    "served": 40,
    "ttft_ewma_ms": None,
}
SITES = {
    "sites": [
        {
            "name": "west",
            "region": "NW",
            "max_data_class": "sensitive",
            "state": "active",
            "backends": [BACKEND, {**BACKEND, "name": "west-2", "ejected": True}],
        },
        {
            "name": "ost",
            "region": "SN",
            "max_data_class": "internal",
            "state": "draining",
            "backends": [],
        },
    ]
}


def test_sites_one_row_per_backend(cli: Cli) -> None:
    cli.api.routes[("GET", "/admin/sites")] = SITES
    r = cli("sites", *TARGET)
    assert r.exit_code == 0, r.output
    assert [line.split() for line in r.stdout.splitlines()] == [
        ["site", "region", "max_class", "state", "backend", "health", "in_flight", "served",
         "ttft_ms"],
        ["west", "NW", "sensitive", "active", "west-1", "up", "2", "40", "-"],
        ["west", "NW", "sensitive", "active", "west-2", "ejected", "2", "40", "-"],
        # a site without backends is listed too (it used to vanish from the table)
        ["ost", "SN", "internal", "draining", "-", "-", "-", "-", "-"],
    ]  # fmt: skip


def test_sites_as_json(cli: Cli) -> None:
    cli.api.routes[("GET", "/admin/sites")] = SITES
    r = cli("sites", "--json", *TARGET)
    assert json.loads(r.stdout) == SITES


def test_drain_maintenance_resume(cli: Cli) -> None:
    for action in ("drain", "maintenance", "resume"):
        cli.api.routes[("POST", f"/admin/sites/west/{action}")] = {
            "site": "west",
            "previous": "active",
            "state": action,
        }
        r = cli(action, "west", *TARGET)
        assert r.exit_code == 0, r.output
        assert r.stdout == f"west: active -> {action}\n"


def test_an_unknown_site_is_the_access_points_error(cli: Cli) -> None:
    r = cli("drain", "nowhere", *TARGET)
    assert r.exit_code == 1
    assert "HTTP 404" in r.stderr
