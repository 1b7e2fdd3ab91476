"""Rows as table, CSV and JSON: the one output module, and a command that uses each."""

from __future__ import annotations

import json

import pytest
import typer

from tests.cli.conftest import TARGET, Cli
from verbund.cli._output import check_format, emit, table

ROWS = [
    {"site": "west", "requests": 12, "cost": None, "extra": "x"},
    {"site": "sued-long-name", "requests": 3, "cost": "0.60"},
]


def test_table_pads_columns_and_marks_missing_values() -> None:
    assert table(ROWS, ["site", "requests", "cost"]).splitlines() == [
        "site            requests  cost",
        "west            12        -   ",
        "sued-long-name  3         0.60",
    ]
    assert table([{"a": 1}], ["a", "b"]).splitlines() == ["a  b", "1   "]
    assert table([], ["site"]) == "(no rows)"


def test_csv_has_the_columns_only(capsys: pytest.CaptureFixture[str]) -> None:
    emit(ROWS, ["site", "requests", "cost"], "csv")
    assert capsys.readouterr().out.splitlines() == [
        "site,requests,cost",
        "west,12,",
        "sued-long-name,3,0.60",
    ]


def test_json_has_the_whole_rows(capsys: pytest.CaptureFixture[str]) -> None:
    emit(ROWS, ["site"], "json")
    assert json.loads(capsys.readouterr().out) == ROWS


def test_an_unknown_format_is_refused() -> None:
    assert check_format("csv") == "csv"
    with pytest.raises(typer.Exit) as ex:
        check_format("xml")
    assert ex.value.exit_code == 1


USAGE = {
    "group_by": ["institution"],
    "data": [
        {
            "institution": "uni-a",
            "requests": 3,
            "failed": 0,
            "total_tokens": 30,
            "gpu_seconds": None,
        }
    ],
}


@pytest.fixture
def usage_cli(cli: Cli) -> Cli:
    cli.api.routes[("GET", "/admin/usage")] = USAGE
    return cli


def test_usage_as_table(usage_cli: Cli) -> None:
    r = usage_cli("usage", *TARGET)
    assert r.exit_code == 0, r.output
    head, row = r.stdout.splitlines()
    assert head.split() == [
        "institution",
        "requests",
        "failed",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cpu_seconds",
        "gpu_seconds",
        "request_bytes",
        "response_bytes",
    ]
    assert row.split() == ["uni-a", "3", "0", "30", "-"]


def test_usage_as_csv(usage_cli: Cli) -> None:
    r = usage_cli("usage", "--format", "csv", *TARGET)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [
        "institution,requests,failed,prompt_tokens,completion_tokens,total_tokens,"
        "cpu_seconds,gpu_seconds,request_bytes,response_bytes",
        "uni-a,3,0,,,30,,,,",
    ]


def test_usage_as_json(usage_cli: Cli) -> None:
    r = usage_cli("usage", "--format", "json", *TARGET)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == USAGE["data"]


def test_usage_refuses_an_unknown_format_before_calling(usage_cli: Cli) -> None:
    r = usage_cli("usage", "--format", "xml", *TARGET)
    assert r.exit_code == 1
    assert "--format must be table, csv or json" in r.stderr
    assert usage_cli.api.calls == []
