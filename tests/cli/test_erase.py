"""`verbund erase` sends one subject to the admin API."""

from __future__ import annotations

from tests.cli.conftest import TARGET, Cli


def test_cli_erase_posts_the_subject(cli: Cli) -> None:
    cli.api.routes[("POST", "/admin/erasure")] = lambda kw: {"subject": kw["json"], "files": 1}
    r = cli("erase", "--key", "key_abc", "--yes", *TARGET)
    assert r.exit_code == 0, r.output
    assert '"key_id": "key_abc"' in r.output
    assert cli("erase", "--key", "a", "--person", "b", "--yes", *TARGET).exit_code != 0
