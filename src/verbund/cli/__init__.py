"""The ``verbund`` program. Thin: parses options and calls the services that do the work.

One module per group of commands: ``_serve`` (up, gateway, check), ``_sites`` (sites and
their lifecycle), ``_keys``, ``_accounting`` (usage, settle), ``_audit``, ``_jobs``.
``_target`` finds the access point a command talks to; ``_output`` prints rows.
"""

from __future__ import annotations

import typer

from verbund.cli import _accounting, _audit, _erase, _jobs, _keys, _receipt, _serve, _sites
from verbund.cli._target import Session, open_session

__all__ = ["Session", "app", "create_app", "main"]


def create_app() -> typer.Typer:
    app = typer.Typer(
        no_args_is_help=True, add_completion=False, help="Verbund: federated AI access."
    )
    app.callback()(open_session)
    for group in (_serve, _sites, _keys, _accounting, _audit, _jobs, _erase, _receipt):
        group.register(app)
    return app


app = create_app()


def main() -> None:
    app()
