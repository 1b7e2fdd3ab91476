"""Rendering: the Jinja2 environment, the navigation a role sees, and HTML answers.

Templates come from the package (``verbund/console/templates``) with autoescaping on for
everything: an institution, key or model name with ``<script>`` in it is shown as text.
Charts are the one kind of markup put in unescaped, and they escape their own labels
(:mod:`verbund.console._charts`). Which pages a role sees in the navigation follows the
same permission function the API enforces (:func:`verbund.tenancy.can`); the pages
check it again, the navigation only leaves out what would be refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from verbund.tenancy import Actor, Permission, Role, can

__all__ = ["NAV", "Console", "NavItem", "Viewer", "allowed", "own_target", "svg"]

ROLE_LABELS = {
    Role.member: "member",
    Role.institution_admin: "institution admin",
    Role.site_operator: "site operator",
    Role.auditor: "auditor",
    Role.federation_admin: "federation admin",
}


@dataclass(frozen=True, slots=True)
class NavItem:
    path: str
    label: str
    about: str
    permission: Permission | None  # None: every signed-in person
    target: str  # "institution", "site" or "" (federation-wide)


_OWN, _USAGE, _SITE = Permission.own_keys, Permission.usage_read, Permission.site_lifecycle
NAV = (
    NavItem("/keys", "My keys", "create and revoke your API keys", _OWN, "institution"),
    NavItem("/usage", "My usage", "your requests and tokens by day and model", _OWN, "institution"),
    NavItem("/models", "Models", "what you may use, where it runs, its licence", None, ""),
    NavItem("/federation", "Federation", "sites by region, health, load, availability", None, ""),
    NavItem(
        "/institution", "Institution", "usage by person, key, model; budget", _USAGE, "institution"
    ),
    NavItem("/site", "Site", "your site's state and actions, live load per backend", _SITE, "site"),
    NavItem(
        "/audit", "Audit", "audit chain, export, monthly settlement", Permission.audit_read, ""
    ),
)


def own_target(actor: Actor, scope: str) -> str | None:
    """The actor's own institution or site for a page of that ``scope``; ``None`` (the
    whole federation) for a federation-wide page or an actor not scoped so."""
    return {"institution": actor.institution, "site": actor.site}.get(scope)


def allowed(actor: Actor, item: NavItem) -> bool:
    """The check :func:`verbund.console._access.signed_in` makes on the page itself."""
    return item.permission is None or can(actor, item.permission, own_target(actor, item.target))


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in person as the page header shows them."""

    actor: Actor
    name: str

    @property
    def role_label(self) -> str:
        return ROLE_LABELS[self.actor.role]

    @property
    def institution(self) -> str | None:
        return self.actor.institution

    @property
    def site(self) -> str | None:
        return self.actor.site


def svg(markup: str) -> Markup:
    """A chart for a template: its labels are escaped already (see the chart module)."""
    return Markup(markup)  # noqa: S704 - the chart functions escape every label


class Console:
    """What the pages share: the template environment and the console's URL prefix."""

    def __init__(self, base: str, logout_url: str) -> None:
        self.base = base
        self.logout_url = logout_url
        self.env = Environment(
            loader=PackageLoader("verbund.console", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
        )

    def render(
        self,
        request: Request,
        template: str,
        *,
        title: str,
        viewer: Viewer | None,
        csrf: str = "",
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        nav = [] if viewer is None else [n for n in NAV if allowed(viewer.actor, n)]
        here = request.url.path.removeprefix(self.base) or "/"
        html = self.env.get_template(template).render(
            title=title,
            viewer=viewer,
            nav=nav,
            here=here,
            csrf=csrf,
            base=self.base,
            logout_url=self.logout_url,
            **context,
        )
        return HTMLResponse(html, status_code=status)
