"""``verbund receipt verify RECEIPT``: check a processing receipt offline."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from verbund.cli._output import echo_json, fail


def verify(
    receipt: Annotated[str, typer.Argument(help="The X-Verbund-Receipt header's value.")],
    config: Annotated[
        Path | None, typer.Option("--config", help="Federation config with the sites' keys.")
    ] = None,
    key: Annotated[
        str, typer.Option("--key", help="The serving site's public key (base64) instead.")
    ] = "",
) -> None:
    """Check the receipt's signature against the site it names; prints its fields.
    Exit code 2 when it does not verify."""
    from verbund.config import load_config
    from verbund.trust import PartnerKeys, Receipt

    try:
        r = Receipt.decode(receipt)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if key:
        keys = PartnerKeys({r.site: key})
    elif config is not None:
        keys = PartnerKeys(dict(load_config(config).trust.partners))
    else:
        raise fail("give --config (the federation config) or --key (the site's public key)")
    if not r.valid(keys):
        raise fail(f"receipt does NOT verify with the key of site {r.site!r}", 2)
    echo_json({k: v for k, v in asdict(r).items() if k != "signature"})
    typer.echo(f"receipt OK: signed by site {r.site} ({r.jurisdiction})")


def register(app: typer.Typer) -> None:
    receipt = typer.Typer(no_args_is_help=True, help="Check processing receipts.")
    receipt.command("verify")(verify)
    app.add_typer(receipt, name="receipt")
