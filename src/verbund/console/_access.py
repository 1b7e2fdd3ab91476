"""Who is looking at a console page, and what they may do there.

A page asks :func:`signed_in` for the session's actor and the permission it shows; the
answer is the same decision the API makes (:func:`verbund.gateway._deps.authorize`,
:func:`verbund.tenancy.can`), so a page never shows what its API would refuse. No
session (or an expired one) is :class:`SignInNeeded`, which the console answers with a
redirect to the sign-in that returns to the page. Every state-changing form carries the
session's CSRF token and is read through :meth:`Access.form`, which checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs

from starlette.requests import Request

from verbund.console._page import Viewer, own_target
from verbund.errors import BadRequest
from verbund.gateway._auth import check_csrf, session_of
from verbund.gateway._body import read_body
from verbund.gateway._deps import authorize, services
from verbund.identity import Session
from verbund.tenancy import Actor, Permission

__all__ = ["Access", "SignInNeeded", "signed_in"]

FORM_LIMIT = 64 * 1024


class SignInNeeded(Exception):
    """No live session: the console sends the browser to the sign-in."""


@dataclass(frozen=True, slots=True)
class Access:
    session: Session
    viewer: Viewer

    @property
    def actor(self) -> Actor:
        return self.session.actor

    @property
    def csrf(self) -> str:
        return self.session.csrf

    def need(self, permission: Permission, target: str | None) -> None:
        """403 unless the actor may do ``permission`` to ``target``."""
        authorize(self.actor, permission, target)

    async def form(self, request: Request) -> dict[str, str]:
        """The posted form (size-limited), once its ``csrf_token`` matches the session's
        (else 403, before anything is done)."""
        raw = await read_body(request, FORM_LIMIT)
        try:
            fields = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=32)
        except ValueError:
            raise BadRequest("Too many form fields.") from None
        check_csrf(request, self.session, (fields.get("csrf_token") or [""])[0])
        return {k: v[0] for k, v in fields.items()}


async def signed_in(
    request: Request,
    permission: Permission | None,
    scope: Literal["institution", "site", ""],
) -> Access:
    """The session's access, once it may do ``permission`` in its own ``scope`` (its
    institution, its site) or, for roles not scoped so (auditors, federation admins),
    federation-wide."""
    svc = services(request)
    session = await session_of(request, svc)
    if session is None:
        raise SignInNeeded
    actor = session.actor
    if permission is not None:
        authorize(actor, permission, own_target(actor, scope))
    person = await svc.identity.people.get(actor.id)
    name = (person.display_name if person is not None else "") or actor.id[:12]
    return Access(session, Viewer(actor, name))
