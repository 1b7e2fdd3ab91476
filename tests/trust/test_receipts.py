"""A processing receipt verifies with the serving site's key; any edited field, or
another site's key, fails; `verbund receipt verify` says which."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.trust.chain import keyring, partner
from verbund.cli import app
from verbund.trust import Receipt, sign_receipt

WEST, EAST = partner("rz-west"), partner("rz-east")
KEYS = keyring(WEST, EAST)


def _receipt() -> Receipt:
    r = Receipt("req-1", "rz-west", "DE", "sensitive", "smol", 12, 34, 1_700_000_000.5)
    return sign_receipt(WEST, r)


def test_a_receipt_verifies_with_its_site_s_key_and_round_trips() -> None:
    r = _receipt()
    assert r.valid(KEYS)
    assert Receipt.decode(r.encode()) == r
    assert "Hallo" not in r.encode()  # nothing of the request's text, by construction


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", "req-2"),
        ("site", "rz-east"),
        ("jurisdiction", "US"),
        ("data_class", "public"),
        ("model", "other"),
        ("prompt_tokens", 13),
        ("completion_tokens", 1),
        ("ts", 1_700_000_001.5),
    ],
)
def test_editing_any_field_breaks_the_receipt(field: str, value: object) -> None:
    assert not dataclasses.replace(_receipt(), **{field: value}).valid(KEYS)


def test_another_site_cannot_sign_for_a_site() -> None:
    r = Receipt("req-1", "rz-west", "DE", "sensitive", "smol", 1, 1, 1.0)
    with pytest.raises(ValueError):
        sign_receipt(EAST, r)
    forged = dataclasses.replace(r, signature=EAST.sign(r.message()))
    assert not forged.valid(KEYS)


def test_cli_verifies_and_refuses(tmp_path: Path) -> None:
    runner = CliRunner()
    good = _receipt().encode()
    ok = runner.invoke(app, ["receipt", "verify", good, "--key", WEST.public_b64])
    assert ok.exit_code == 0, ok.output
    assert "receipt OK: signed by site rz-west (DE)" in ok.output
    edited = dataclasses.replace(_receipt(), completion_tokens=0).encode()
    bad = runner.invoke(app, ["receipt", "verify", edited, "--key", WEST.public_b64])
    assert bad.exit_code == 2 and "does NOT verify" in bad.output
    wrong = runner.invoke(app, ["receipt", "verify", good, "--key", EAST.public_b64])
    assert wrong.exit_code == 2
    junk = runner.invoke(app, ["receipt", "verify", "not-a-receipt", "--key", WEST.public_b64])
    assert junk.exit_code == 2 and "not a receipt" in junk.output
