"""The access point's one client of a site agent (``verbund site``).

Everything the access point asks of an agent — its catalogue, lifecycle changes, and
what later concerns (jobs, files) add — goes through :class:`AgentClient`: one httpx
client per agent with the access point's bearer credential and, for mutual TLS, its
client certificate. Failures below HTTP come out as :class:`SiteAgentUnavailable`; an
agent's error answer comes out as the matching error of :mod:`verbund.errors`, with the
agent's message (the agent speaks OpenAI's error shape too). Tests put an in-process
agent behind it with ``transport=httpx.ASGITransport(app)``.

Inference relayed through an agent (``ingress = "agent"``) does not go through this
client: it is the proxy's request path like any other backend's, with the agent's relay
URL as base (:meth:`AgentClient.relay_url`), the credential header
(:meth:`AgentClient.auth_headers`) and the agent's TLS context (:attr:`AgentClient.tls`),
so routing, failover and usage stay as they are.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson
from pydantic import ValidationError

from verbund.config import SiteConfig
from verbund.errors import (
    ApiError,
    BadRequest,
    ConfigError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    SiteAgentError,
    SiteAgentUnavailable,
)
from verbund.federation._catalogue import SiteCatalogue

__all__ = [
    "CATALOGUE_PATH",
    "ERASURE_PATH",
    "INSTITUTION_HEADER",
    "RECEIPT_HEADER",
    "RELAY_PREFIX",
    "STATE_ACTIONS",
    "TRUST_CHECKPOINTS_PATH",
    "USAGE_STATEMENTS_PATH",
    "AgentClient",
    "agent_error",
    "parse_catalogue",
]

RELAY_PREFIX = "/relay"  # the agent's relay: <agent_url>/relay/<backend>/<backend path>
CATALOGUE_PATH = "/catalogue"
TRUST_CHECKPOINTS_PATH = "/trust/checkpoints"
USAGE_STATEMENTS_PATH = "/usage/statements"
ERASURE_PATH = "/erasure"
# what the access point tells an agent's relay about a request (ingress = "agent")
INSTITUTION_HEADER = "x-verbund-institution"
RECEIPT_HEADER = "x-verbund-receipt"  # request: "required"; answer: the signed receipt
STATE_ACTIONS = {"draining": "drain", "maintenance": "maintenance", "active": "resume"}
_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
}


def agent_error(site: str, status: int, body: bytes) -> ApiError:
    """The error of the errors tree for an agent's error answer."""
    message = f"The site agent of {site!r} answered {status}."
    code: str | None = None
    param: str | None = None
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
        err = orjson.loads(body)["error"]
        message = str(err.get("message") or message)
        code = err.get("code") if isinstance(err.get("code"), str) else None
        param = err.get("param") if isinstance(err.get("param"), str) else None
    if status == 401:  # our credential: the access point's configuration, not the client's
        return SiteAgentError(f"The site agent of {site!r} refused this access point's credential.")
    kind = _BY_STATUS.get(status)
    if kind is None and status == 503 and code:  # the agent says why it cannot now
        return SiteAgentError(message, code=code, param=param)
    if kind is None:
        return SiteAgentError(f"The site agent of {site!r} failed ({status}).")
    return kind(message, code=code, param=param)


class AgentClient:
    """One site agent, as this access point reaches it."""

    def __init__(
        self,
        site: str,
        url: str,
        key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        timeout: float = 10.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.site = site
        self.url = url.rstrip("/")
        self._key = key
        # what relayed inference to this agent is sent over (its CA, our certificate)
        self.tls = verify if isinstance(verify, ssl.SSLContext) else None
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers={"authorization": f"Bearer {key}"},
            transport=transport,
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            follow_redirects=False,
            trust_env=False,
        )

    @classmethod
    def for_site(
        cls,
        config: SiteConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 2.0,
    ) -> AgentClient:
        """The client of ``config``'s agent; its credential from ``$agent_key_env``."""
        env = os.environ if env is None else env
        key = env.get(config.agent_key_env or "", "")
        if not key:
            raise ConfigError(
                [(f"sites[{config.name}].agent_key_env", f"${config.agent_key_env} is not set")]
            )
        return cls(
            config.name,
            config.agent_url,
            key,
            transport=transport,
            verify=tls_context(config) if config.agent_url.startswith("https://") else True,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )

    # -- generic requests (each concern's calls build on these) ----------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        within: float | None = None,
        ok: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send a request (``within``: seconds, instead of the client's time-out). A 2xx
        (or a status in ``ok``) comes back read; anything else raises the error of the
        tree (see :func:`agent_error`)."""
        content = orjson.dumps(json) if json is not None else None
        hdrs = {"content-type": "application/json", **(headers or {})} if content else headers
        try:
            resp = await self._client.request(
                method,
                path,
                content=content,
                params=params,
                headers=hdrs,
                timeout=within if within is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        if resp.is_success or resp.status_code in ok:
            return resp
        raise agent_error(self.site, resp.status_code, resp.content)

    async def get_json(self, path: str, **kwargs: Any) -> Any:
        return _json(self.site, await self.request("GET", path, **kwargs))

    async def post_json(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return _json(self.site, await self.request("POST", path, json=body or {}, **kwargs))

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        content: bytes | AsyncIterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        within: float | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """A request whose body goes out and/or comes back streamed (files, artefacts):
        the response is open inside the block; errors as :meth:`request`."""
        request = self._client.build_request(
            method,
            path,
            content=content,
            headers=headers,
            timeout=within if within is not None else httpx.USE_CLIENT_DEFAULT,
        )
        try:
            resp = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        try:
            if not resp.is_success:
                body = await resp.aread()
                raise agent_error(self.site, resp.status_code, body)
            yield resp
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from None
        finally:
            await resp.aclose()

    # -- the relay --------------------------------------------------------------------------

    def relay_url(self, backend: str) -> str:
        """Base URL under which the agent relays to ``backend`` (its paths appended)."""
        return f"{self.url}{RELAY_PREFIX}/{backend}"

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._key}"}

    # -- calls ------------------------------------------------------------------------------

    async def catalogue(
        self, etag: str = "", wait: float = 0.0
    ) -> tuple[SiteCatalogue, str, bytes] | None:
        """The site's catalogue, its ETag and its raw JSON; None if it still has ``etag``
        (304). With ``wait`` the agent holds the request up to that many seconds until
        the catalogue changes (long-polling)."""
        resp = await self.request(
            "GET",
            CATALOGUE_PATH,
            params={"wait": f"{wait:g}"} if wait > 0 else None,
            headers={"if-none-match": etag} if etag else None,
            within=wait + self._timeout,
            ok=(304,),
        )
        if resp.status_code == 304:
            return None
        return parse_catalogue(self.site, resp.content), resp.headers.get("etag", ""), resp.content

    async def report_demand(
        self,
        model: str,
        *,
        waiting: int = 0,
        in_flight: dict[str, int] | None = None,
        idle_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Tell the agent the demand for one of its on-demand models (waiting requests
        start it); answers the model's status and its expected start time."""
        answer: dict[str, Any] = await self.post_json(
            f"/on-demand/{model}",
            {"waiting": waiting, "in_flight": in_flight or {}, "idle_seconds": idle_seconds},
        )
        return answer

    async def node_time(self, since: float = 0.0) -> list[dict[str, Any]]:
        """Node time the site's on-demand instances held, per model and UTC hour from
        ``since`` (Unix seconds): ``{"model", "hour", "cpu_seconds", "gpu_seconds"}``."""
        answer = await self.get_json("/on-demand/node-time", params={"since": since})
        hours = answer.get("hours") if isinstance(answer, dict) else None
        return [h for h in hours if isinstance(h, dict)] if isinstance(hours, list) else []

    async def set_state(self, state: str, actor: str) -> dict[str, Any]:
        """Ask the agent to change its site's lifecycle state (``actor``: who asked here)."""
        answer: dict[str, Any] = await self.post_json(
            f"/sites/{self.site}/{STATE_ACTIONS[state]}", {"actor": actor}
        )
        return answer

    # -- trust (docs/trust.md): the agent signs with the site's own key ---------------------

    async def sign_checkpoint(self, chain: str, index: int, head: str) -> dict[str, Any]:
        """Ask the agent to sign "entry #index of ``chain`` has hash ``head``"; it keeps
        its own copy and refuses (409) a head that contradicts one it signed before."""
        answer: dict[str, Any] = await self.post_json(
            TRUST_CHECKPOINTS_PATH, {"chain": chain, "index": index, "hash": head}
        )
        return answer

    async def usage_statement(self, month: str) -> dict[str, Any]:
        """The site's signed statement of what its relay served in ``month`` (YYYY-MM)."""
        answer: dict[str, Any] = await self.get_json(USAGE_STATEMENTS_PATH, params={"month": month})
        return answer

    async def erase(self, institution: str, keys: list[str], jobs: list[str]) -> dict[str, Any]:
        """Erase at the site what belongs to ``keys`` of ``institution`` (their jobs'
        records, artefacts and staged files); answers the counts."""
        answer: dict[str, Any] = await self.post_json(
            ERASURE_PATH, {"institution": institution, "keys": keys, "jobs": jobs}, within=60.0
        )
        return answer

    async def healthz(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self.get_json("/healthz")
        return answer

    async def aclose(self) -> None:
        await self._client.aclose()

    def _unavailable(self, exc: httpx.HTTPError) -> SiteAgentUnavailable:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "is unreachable"
        return SiteAgentUnavailable(
            f"The site agent of {self.site!r} {kind} ({type(exc).__name__})."
        )


def tls_context(config: SiteConfig) -> ssl.SSLContext:
    """Verify the agent against ``agent_ca_file`` (or the system's CAs); present this
    access point's certificate when the site asks for mutual TLS."""
    ctx = ssl.create_default_context(cafile=config.agent_ca_file or None)
    if config.agent_client_cert:
        ctx.load_cert_chain(config.agent_client_cert, config.agent_client_key)
    return ctx


def parse_catalogue(site: str, body: bytes) -> SiteCatalogue:
    try:
        catalogue = SiteCatalogue.model_validate_json(body)
    except ValidationError as exc:
        raise SiteAgentError(
            f"The site agent of {site!r} announced a malformed catalogue "
            f"({exc.error_count()} problems)."
        ) from None
    if catalogue.site.name != site:
        raise SiteAgentError(
            f"The agent at the URL of site {site!r} announces site {catalogue.site.name!r}."
        )
    return catalogue


def _json(site: str, resp: httpx.Response) -> Any:
    try:
        return orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        raise SiteAgentError(f"The site agent of {site!r} answered with no JSON.") from None
