from __future__ import annotations

import json

from tests.cli.conftest import TARGET, Cli

JOB = {
    "id": "ftjob-1",
    "institution": "uni-a",
    "recipe": "lora",
    "status": "running",
    "site": None,
    "created_at": None,
    "result_model": None,
    "usage": {"cpu_seconds": 1.5, "gpu_seconds": 0},
}


def test_jobs_list_as_admin(cli: Cli) -> None:
    cli.api.routes[("GET", "/admin/jobs")] = {"data": [JOB]}
    r = cli("jobs", "list", "--status", "running", "--limit", "5", *TARGET)
    assert r.exit_code == 0, r.output
    assert [line.split() for line in r.stdout.splitlines()] == [
        ["id", "institution", "recipe", "status", "site", "created", "model", "cpu_s", "gpu_s"],
        ["ftjob-1", "uni-a", "lora", "running", "-", "-", "-", "1.5", "0"],
    ]
    assert cli.api.calls[0][2] == {"params": {"limit": 5, "status": "running"}}


def test_jobs_with_an_api_key_see_their_own(cli: Cli) -> None:
    cli.api.routes[("GET", "/v1/training/jobs")] = {"data": [JOB]}
    cli.api.routes[("GET", "/v1/training/jobs/ftjob-1")] = JOB
    cli.api.routes[("POST", "/v1/training/jobs/ftjob-1/cancel")] = {
        "id": "ftjob-1",
        "status": "cancelled",
    }
    key = ("--api-key", "sk-inst")
    r = cli("jobs", "list", "--json", *TARGET, *key)
    assert json.loads(r.stdout) == [JOB]
    r = cli("jobs", "show", "ftjob-1", *TARGET, *key)
    assert json.loads(r.stdout) == JOB
    r = cli("jobs", "cancel", "ftjob-1", *TARGET, *key)
    assert (r.exit_code, r.stdout) == (0, "ftjob-1: cancelled\n")
    assert {t.key for t in cli.api.targets} == {"sk-inst"}


def test_jobs_events_oldest_first(cli: Cli) -> None:
    cli.api.routes[("GET", "/admin/jobs/ftjob-1/events")] = {
        "data": [
            {"created_at": None, "level": "info", "message": "second"},
            {"created_at": None, "level": "warn", "message": "first"},
        ]
    }
    r = cli("jobs", "events", "ftjob-1", *TARGET)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["-  warn   first", "-  info   second"]
