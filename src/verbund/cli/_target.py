"""Which access point a command talks to, and with which key.

``--url``, ``--admin-key`` and ``--state-dir`` are declared once, below, and attached to
every command that needs an access point (``cls=TargetCommand``). Their values land on
the ``Session`` that the root callback keeps on the Click context; the session resolves
the target on first use, so commands that run locally (``up``, ``gateway``, ``check``,
``audit verify --file``) never need one and never fail for want of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol

import typer
from typer.core import TyperCommand

from verbund.admin_client import AdminClient, AdminError
from verbund.admin_client import Target as ClientTarget
from verbund.cli._output import fail

__all__ = [
    "DEFAULT_STATE_DIR",
    "InstitutionTargetCommand",
    "Session",
    "Target",
    "TargetCommand",
    "TargetOptions",
    "open_session",
    "resolve",
    "session",
]

DEFAULT_STATE_DIR = Path(".verbund")  # where `verbund up` writes demo.json by default

_NO_ADMIN_TARGET = (
    "Which access point? Give --url and --admin-key, set VERBUND_URL and "
    "VERBUND_ADMIN_KEY, or --state-dir of a running `verbund up`."
)
_NO_URL = (
    "Which access point? Give --url, set VERBUND_URL, or --state-dir of a running `verbund up`."
)


@dataclass
class TargetOptions:
    """The target as given on the command line (None: not given)."""

    url: str | None = None
    admin_key: str | None = None
    api_key: str | None = None  # only the jobs commands take one ($VERBUND_API_KEY)
    state_dir: Path | None = None


@dataclass(frozen=True)
class Target:
    """The access point and the key a command shows it."""

    url: str
    key: str
    institution: bool = False  # KEY is an institution's API key, not the admin key


def resolve(options: TargetOptions, environ: Mapping[str, str]) -> Target:
    """URL and key each from: the option, then $VERBUND_URL / $VERBUND_ADMIN_KEY, then
    ``<state-dir>/demo.json`` (default ``.verbund``). An API key (``--api-key``) replaces
    the admin key; the URL is found the same way."""
    url = options.url or environ.get("VERBUND_URL")
    institution = bool(options.api_key)
    key = options.api_key or options.admin_key or environ.get("VERBUND_ADMIN_KEY")
    if not (url and key):
        demo = _demo_info(options.state_dir or DEFAULT_STATE_DIR)
        url = url or demo.get("url")
        key = key or demo.get("admin_key")
    if not url or not key:
        raise AdminError(_NO_URL if institution else _NO_ADMIN_TARGET)
    return Target(str(url).rstrip("/"), str(key), institution)


def _demo_info(state_dir: Path) -> dict[str, Any]:
    demo = state_dir / "demo.json"
    if not demo.exists():
        return {}
    try:
        info = json.loads(demo.read_text())
    except (OSError, ValueError):
        raise AdminError(f"{demo} is not valid JSON.") from None
    if not isinstance(info, dict):
        raise AdminError(f"{demo} is not valid JSON.")
    return info


class Api(Protocol):
    """What commands need of an access point; ``AdminClient`` in production."""

    def call(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def close(self) -> None: ...


def connect(target: Target) -> Api:
    return AdminClient(ClientTarget(target.url, target.key))


class Session:
    """One invocation's view of the access point, kept on the Click context (``ctx.obj``).

    The options fill ``options`` while the command line is parsed; ``target`` and the
    client are made once, when a command first calls the access point."""

    def __init__(self, connect: Callable[[Target], Api] = connect) -> None:
        self.options = TargetOptions()
        self._connect = connect
        self._target: Target | None = None
        self._api: Api | None = None

    @property
    def target(self) -> Target:
        if self._target is None:
            try:
                self._target = resolve(self.options, os.environ)
            except AdminError as exc:
                raise fail(str(exc)) from None
        return self._target

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The access point's JSON answer; an unreachable or refusing one exits with 1."""
        if self._api is None:
            self._api = self._connect(self.target)
        try:
            return self._api.call(method, path, **kwargs)
        except AdminError as exc:
            raise fail(str(exc)) from None

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


def session(ctx: typer.Context) -> Session:
    """The invocation's session (the root callback made it; a bare command makes one)."""
    return ctx.ensure_object(Session)


def open_session(ctx: typer.Context) -> None:
    """Root callback: one session per invocation, closed when the command is done."""
    ctx.call_on_close(session(ctx).close)


def _store(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    if value is not None and param.name:
        setattr(session(ctx).options, param.name, value)
    return value


UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="Access point URL [$VERBUND_URL].", callback=_store),
]
AdminKeyOpt = Annotated[
    str | None,
    typer.Option("--admin-key", help="Admin key [$VERBUND_ADMIN_KEY].", callback=_store),
]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="VERBUND_API_KEY",
        help="An institution's key: its own jobs only [$VERBUND_API_KEY]. Default: admin key.",
        callback=_store,
    ),
]
StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir", help="State dir of `verbund up` (reads demo.json).", callback=_store
    ),
]


def _admin_target(
    url: UrlOpt = None, admin_key: AdminKeyOpt = None, state_dir: StateDirOpt = None
) -> None:
    """Declares the target options of ``TargetCommand``; never called."""


def _institution_target(
    url: UrlOpt = None,
    admin_key: AdminKeyOpt = None,
    api_key: ApiKeyOpt = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Declares the target options of ``InstitutionTargetCommand``; never called."""


class TargetCommand(TyperCommand):
    """A command that talks to an access point: takes the target options after its own.

    The options do not reach the command function; they fill the ``Session``, which the
    function gets with ``session(ctx)``."""

    declared_by: ClassVar[Callable[..., None]] = _admin_target

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        declaring = typer.Typer(add_completion=False)
        declaring.command()(type(self).declared_by)
        for param in typer.main.get_command(declaring).params:
            param.expose_value = False
            self.params.append(param)


class InstitutionTargetCommand(TargetCommand):
    """A ``TargetCommand`` that also takes an institution's ``--api-key``."""

    declared_by = _institution_target
