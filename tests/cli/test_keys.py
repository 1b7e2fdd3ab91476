from __future__ import annotations

import json

from tests.cli.conftest import TARGET, Cli

CREATED = {"id": "key_1", "key": "sk-secret", "institution": "uni-a"}


def test_keys_create_prints_the_key_once(cli: Cli) -> None:
    cli.api.routes[("POST", "/admin/keys")] = CREATED
    r = cli("keys", "create", "--institution", "uni-a", "--name", "lab", *TARGET)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[:2] == ["id:  key_1", "key: sk-secret"]
    assert cli.api.calls[0][2] == {"json": {"institution": "uni-a", "name": "lab"}}
    r = cli("keys", "create", "--institution", "uni-a", "--json", *TARGET)
    assert r.stdout == json.dumps(CREATED) + "\n"  # one line, for scripts


def test_keys_list_and_revoke(cli: Cli) -> None:
    cli.api.routes[("GET", "/admin/keys")] = {
        "data": [
            {"id": "key_1", "prefix": "sk-ab", "institution": "uni-a", "name": "", "revoked": False}
        ]
    }
    cli.api.routes[("DELETE", "/admin/keys/key_1")] = {"id": "key_1", "revoked": True}
    r = cli("keys", "list", "--institution", "uni-a", *TARGET)
    assert r.exit_code == 0, r.output
    assert [line.split() for line in r.stdout.splitlines()] == [
        ["id", "prefix", "institution", "name", "revoked"],
        ["key_1", "sk-ab", "uni-a", "False"],
    ]
    assert cli.api.calls[0][2] == {"params": {"institution": "uni-a"}}
    r = cli("keys", "revoke", "key_1", *TARGET)
    assert (r.exit_code, r.stdout) == (0, "revoked key_1\n")


def test_keys_create_a_site_operators_key(cli: Cli) -> None:
    cli.api.routes[("POST", "/admin/keys")] = {**CREATED, "id": "akey_1", "role": "site_operator"}
    r = cli("keys", "create", "--role", "site_operator", "--site", "west", *TARGET)
    assert r.exit_code == 0, r.output
    assert cli.api.calls[0][2] == {"json": {"name": "", "role": "site_operator", "site": "west"}}
