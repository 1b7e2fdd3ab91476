"""The HTTP clients of the access point: one request client and one side client per backend.

Every request sent on a client's behalf — inference, and the model metadata OIP clients
read — goes through :class:`Upstream` (``UpstreamPool.upstream``): on aiohttp, with a
bounded keep-alive pool per backend. aiohttp costs about a fifth of the
CPU per call that httpx does and takes idle connections from a queue, so its cost stays
flat with the number of requests in flight (``docs/performance.md``). Failures below
HTTP come out as :class:`UpstreamFailed` subclasses, whatever the client.

Probes and metrics scrapes share one small side client for all backends
(:class:`SideClient`, ``UpstreamPool.side``), apart from the request pools, so a full
request pool never delays a probe into a false "down". One client, not one per backend:
an httpx client per backend built its own SSL context (0.7 MB and 26 ms each), which made
start-up time and memory grow with the size of the federation; and aiohttp costs a
fraction of httpx's CPU per call, which matters for a prober that calls every backend.

Tests pass ``transport_factory`` (an ``httpx`` transport per backend); both clients then
go through it, requests by way of :class:`HttpxUpstream`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

import aiohttp
import httpx
from yarl import URL

from verbund.config import RoutingConfig
from verbund.errors import ConfigError
from verbund.federation._backend import Backend
from verbund.federation._federation import Federation

TransportFactory = Callable[[Backend], httpx.AsyncBaseTransport | None]

DEFAULT_POOL = 1024  # connections per backend when its max_concurrency is unknown
SIDE_POOL = 2  # idle connections kept per backend for probes and scrapes
SIDE_LIMIT = 256  # connections of the shared side client, all backends together
KEEPALIVE_SECONDS = 30.0


class UpstreamFailed(Exception):
    """An upstream call failed below HTTP."""


class UpstreamRefused(UpstreamFailed):
    """Nothing accepted the connection (or the name did not resolve)."""


class UpstreamTimedOut(UpstreamFailed):
    """Connecting or reading took longer than allowed."""


class UpstreamBroken(UpstreamFailed):
    """The connection broke, or the answer was not valid HTTP."""


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes:
        """The whole body."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, raw; raises :class:`UpstreamFailed` when it breaks."""
        ...

    async def aclose(self) -> None:
        """Give the connection back (or close it if the body was not read to the end)."""
        ...


class Upstream(Protocol):
    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str], *, read_timeout: float
    ) -> UpstreamResponse:
        """Send a POST; returns once the status line and headers are in."""
        ...

    async def get(
        self, path: str, headers: Mapping[str, str], *, read_timeout: float
    ) -> UpstreamResponse:
        """Send a GET (model metadata); returns once the status line and headers are in."""
        ...

    async def aclose(self) -> None: ...


# --- aiohttp: the request path in production ------------------------------------------


class _AiohttpResponse:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._resp.close()
            raise _aiohttp_failure(exc) from None

    async def chunks(self) -> AsyncIterator[bytes]:
        it = self._resp.content.iter_any().__aiter__()
        while True:
            try:
                chunk = await it.__anext__()
            except StopAsyncIteration:
                return
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._resp.close()
                raise _aiohttp_failure(exc) from None
            yield chunk

    async def aclose(self) -> None:
        self._resp.release()


def _aiohttp_failure(exc: aiohttp.ClientError | TimeoutError) -> UpstreamFailed:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamRefused(type(exc).__name__)
    if isinstance(exc, TimeoutError):  # aiohttp's time-outs are TimeoutErrors too
        return UpstreamTimedOut(type(exc).__name__)
    return UpstreamBroken(type(exc).__name__)


class AiohttpUpstream:
    """One backend's request client: a keep-alive pool of at most ``limit`` connections.

    The session is made on first use, inside the running event loop. Requests ask for
    ``identity`` encoding, because the bytes are relayed as they come."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        limit: int,
        connect_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._base = base_url
        self._headers = {**headers, "accept-encoding": "identity"}
        self._tls: ssl.SSLContext | bool = tls if tls is not None else True
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._limit,
                    limit_per_host=0,
                    keepalive_timeout=KEEPALIVE_SECONDS,
                    ssl=self._tls,
                ),
                headers=self._headers,
                skip_auto_headers=("User-Agent",),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    def _url(self, path: str) -> URL:
        url = self._urls.get(path)
        if url is None:
            url = URL(self._base + path, encoded=True)
            if len(self._urls) < 1024:  # paths are per model: bounded, but be safe
                self._urls[path] = url
        return url

    def _timeout(self, read_timeout: float) -> aiohttp.ClientTimeout:
        # waiting for a free pooled connection is bounded by the caller's deadline, not
        # here: a full pool is load, not a sign that the backend is down
        return aiohttp.ClientTimeout(
            total=None, sock_connect=self._connect_timeout, sock_read=read_timeout
        )

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str], *, read_timeout: float
    ) -> UpstreamResponse:
        return await self._send("POST", path, body, headers, read_timeout)

    async def get(
        self, path: str, headers: Mapping[str, str], *, read_timeout: float
    ) -> UpstreamResponse:
        return await self._send("GET", path, None, headers, read_timeout)

    async def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        read_timeout: float,
    ) -> UpstreamResponse:
        try:
            resp = await self._session_now().request(
                method,
                self._url(path),
                data=body,
                headers=headers,
                timeout=self._timeout(read_timeout),
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _aiohttp_failure(exc) from None
        return _AiohttpResponse(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


# --- httpx: the request path over an in-process transport (tests, fakes) ---------------


class _HttpxResponse:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status = resp.status_code
        self.headers: Mapping[str, str] = resp.headers

    async def read(self) -> bytes:
        try:
            return await self._resp.aread()
        except httpx.HTTPError as exc:
            await self._resp.aclose()
            raise _httpx_failure(exc) from None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            body = self._resp.content  # an answer a mock transport made whole
        except httpx.ResponseNotRead:
            pass
        else:
            yield body
            return
        try:
            async for chunk in self._resp.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise _httpx_failure(exc) from None

    async def aclose(self) -> None:
        await self._resp.aclose()


def _httpx_failure(exc: httpx.HTTPError) -> UpstreamFailed:
    if isinstance(exc, httpx.ConnectError):
        return UpstreamRefused(type(exc).__name__)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimedOut(type(exc).__name__)
    return UpstreamBroken(type(exc).__name__)


class HttpxUpstream:
    """The request path over an httpx client (used with a test transport)."""

    def __init__(self, client: httpx.AsyncClient, connect_timeout: float) -> None:
        self._client = client
        self._connect_timeout = connect_timeout

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str], *, read_timeout: float
    ) -> UpstreamResponse:
        return await self._send("POST", path, body, headers, read_timeout)

    async def get(
        self, path: str, headers: Mapping[str, str], *, read_timeout: float
    ) -> UpstreamResponse:
        return await self._send("GET", path, None, headers, read_timeout)

    async def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        read_timeout: float,
    ) -> UpstreamResponse:
        request = self._client.build_request(
            method,
            path,
            content=body,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=self._connect_timeout),
        )
        try:
            resp = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _httpx_failure(exc) from None
        return _HttpxResponse(resp)

    async def aclose(self) -> None:
        await self._client.aclose()


# --- the side client: probes and metrics scrapes ------------------------------------------


class SideClient(Protocol):
    async def get(self, backend: Backend, target: str, *, within: float) -> tuple[int, bytes]:
        """GET ``target`` (a path of the backend, or an absolute URL) within ``within``
        seconds: status and body. Failures below HTTP raise :class:`UpstreamFailed`."""
        ...

    async def aclose(self) -> None: ...


class AiohttpSide:
    """One aiohttp session for the side traffic to every backend (made on first use)."""

    def __init__(
        self,
        headers: Mapping[str, Mapping[str, str]],
        connect_timeout: float,
        tls: Mapping[str, ssl.SSLContext] | None = None,
    ) -> None:
        self._headers = headers
        self._tls = tls if tls is not None else {}
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[tuple[str, str], URL] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=SIDE_LIMIT, limit_per_host=SIDE_POOL, keepalive_timeout=KEEPALIVE_SECONDS
                ),
                skip_auto_headers=("User-Agent",),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    async def get(self, backend: Backend, target: str, *, within: float) -> tuple[int, bytes]:
        url = self._urls.get((backend.name, target))
        if url is None:  # built once per backend and path: probes repeat forever
            url = URL(target if "://" in target else backend.url + target, encoded=True)
            self._urls[(backend.name, target)] = url
        timeout = self._timeouts.get(within)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=within, sock_connect=min(within, self._connect_timeout)
            )
            self._timeouts[within] = timeout
        try:
            async with self._session_now().get(
                url,
                headers=self._headers.get(backend.name),
                timeout=timeout,
                allow_redirects=False,
                ssl=self._tls.get(backend.name, True),
            ) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _aiohttp_failure(exc) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxSide:
    """Side traffic over each backend's httpx client (tests: in-process transports);
    backends without one go to ``fallback``."""

    def __init__(self, clients: Mapping[str, httpx.AsyncClient], fallback: SideClient) -> None:
        self._clients = clients
        self._fallback = fallback

    async def get(self, backend: Backend, target: str, *, within: float) -> tuple[int, bytes]:
        client = self._clients.get(backend.name)
        if client is None:
            return await self._fallback.get(backend, target, within=within)
        try:
            resp = await client.get(target, timeout=within)
        except httpx.HTTPError as exc:
            raise _httpx_failure(exc) from None
        return resp.status_code, resp.content

    async def aclose(self) -> None:
        await self._fallback.aclose()  # the httpx clients are the pool's; it closes them


# --- the pool ----------------------------------------------------------------------------


class UpstreamPool:
    """The clients of every backend, built once and shared by the proxy and the probes."""

    def __init__(
        self,
        federation: Federation,
        routing: RoutingConfig,
        transport_factory: TransportFactory | None = None,
    ) -> None:
        self._routing = routing
        self._transport_factory = transport_factory
        self._clients: dict[str, httpx.AsyncClient] = {}  # only with test transports
        self._upstreams: dict[str, Upstream] = {}
        self._limits: dict[str, int] = {}
        self._side_headers: dict[str, Mapping[str, str]] = {}
        self._side_tls: dict[str, ssl.SSLContext] = {}
        # clients of backends that left, until nothing streams from them any more
        self._retired: list[tuple[Backend, Upstream | None, httpx.AsyncClient | None]] = []
        missing: list[tuple[str, str]] = []
        for b in federation.backends.values():
            headers: dict[str, str] = {}
            if b.config.api_key_env:
                secret = os.environ.get(b.config.api_key_env)
                if not secret:
                    missing.append(
                        (f"backends[{b.name}].api_key_env", f"${b.config.api_key_env} is not set")
                    )
                    continue
                headers["authorization"] = f"Bearer {secret}"
            self.add(b, headers)
        if missing:
            raise ConfigError(missing)
        shared = AiohttpSide(self._side_headers, routing.connect_timeout, self._side_tls)
        self.side: SideClient = (
            HttpxSide(self._clients, shared) if transport_factory is not None else shared
        )

    def add(
        self,
        b: Backend,
        headers: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Clients for ``b`` (sent with ``headers``; over ``tls`` when it is reached
        through a site agent with a CA or mutual TLS of its own), also for a backend that
        joins while the access point runs (a site's agent announced it). A backend that
        has clients keeps them."""
        if b.name in self._upstreams:
            return
        headers = headers or {}
        routing = self._routing
        if headers:
            self._side_headers[b.name] = headers
        if tls is not None:
            self._side_tls[b.name] = tls
        transport = self._transport_factory(b) if self._transport_factory else None
        limit = max(16, b.config.max_concurrency * 2) if b.config.max_concurrency else DEFAULT_POOL
        self._limits[b.name] = limit
        if transport is not None:
            self._clients[b.name] = httpx.AsyncClient(
                base_url=b.url,
                headers=headers,
                transport=transport,
                timeout=httpx.Timeout(routing.probe_timeout, connect=routing.connect_timeout),
                follow_redirects=False,
                trust_env=False,
            )
            self._upstreams[b.name] = HttpxUpstream(self._clients[b.name], routing.connect_timeout)
        else:
            self._upstreams[b.name] = AiohttpUpstream(
                b.url, headers, limit=limit, connect_timeout=routing.connect_timeout, tls=tls
            )

    def remove(self, b: Backend) -> None:
        """Take ``b``'s clients out of use (it left the federation). They are closed by
        :meth:`reap` once its requests are done (``b.outstanding``), not now: requests
        still streaming from it finish on them."""
        upstream = self._upstreams.pop(b.name, None)
        client = self._clients.pop(b.name, None)
        self._side_headers.pop(b.name, None)
        self._side_tls.pop(b.name, None)
        self._limits.pop(b.name, None)
        if upstream is not None or client is not None:
            self._retired.append((b, upstream, client))

    async def reap(self) -> None:
        """Close the clients of backends that left and have no request in flight, so an
        access point whose sites' offers keep changing keeps no client of each."""
        done = [r for r in self._retired if r[0].outstanding == 0]
        if done:
            self._retired = [r for r in self._retired if r[0].outstanding > 0]
            await self._close([u for _, u, _ in done if u], [c for _, _, c in done if c])

    async def _close(self, upstreams: list[Upstream], clients: list[httpx.AsyncClient]) -> None:
        await asyncio.gather(
            *(u.aclose() for u in upstreams if not isinstance(u, HttpxUpstream)),
            *(c.aclose() for c in clients),
        )

    def upstream(self, backend: Backend) -> Upstream:
        """The request client: inference and everything else sent on a client's behalf."""
        return self._upstreams[backend.name]

    def limit(self, backend: Backend) -> int:
        """Connections this process opens to the backend at most; more requests queue."""
        return self._limits[backend.name]

    async def aclose(self) -> None:
        retired, self._retired = self._retired, []
        await asyncio.gather(
            self._close(
                [*self._upstreams.values(), *(u for _, u, _ in retired if u)],
                [*self._clients.values(), *(c for _, _, c in retired if c)],
            ),
            self.side.aclose(),
        )
