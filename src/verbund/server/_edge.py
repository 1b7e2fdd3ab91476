"""The access point's HTTP/1.1 edge: what a client may send, and how slowly.

uvicorn's httptools protocol bounds none of it: a 48 MB header is parsed (stalling the
event loop for every tenant), 100,000 headers become 100,000 tuples, a connection that
sends a header line every few seconds, or nothing at all, stays open for ever, and so
does one that drips its body. An access point must hold these bounds on its own, not
only behind nginx or HAProxy, so this protocol adds them to uvicorn's, from ``[gateway]``:

- the request line and headers at most ``max_header_bytes`` and ``max_headers`` (431),
  checked before the parser sees more than that;
- a request's headers complete within ``header_timeout`` of its first byte (408);
- a body progresses by ``body_min_rate`` bytes/s over each ``body_timeout`` window (408),
  not counting time in which the app is not reading;
- an idle connection, before its first request too, closed after ``keep_alive_timeout``;
- at most ``max_connections`` open connections; a request on one more gets 503
  ``overloaded``.

Error answers are in the OpenAI shape (``{"error": "..."}`` under ``/v2/``) and close the
connection; the rest of what the client sends is read and dropped for a moment first
(a lingering close), so that the client sees the answer rather than a reset.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from verbund.config import GatewayConfig
from verbund.errors import ApiError, BadRequest, HeadersTooLarge, Overloaded, RequestTimeout

__all__ = ["EdgeConfig", "EdgeProtocol"]

log = logging.getLogger("verbund.edge")

LINGER_SECONDS = 2.0  # how long an answered, rejected connection is read and dropped


class EdgeConfig(uvicorn.Config):
    """uvicorn's config carrying the ``[gateway]`` bounds to every connection; pickled with
    it, they reach worker processes too."""

    def __init__(self, app: Any, *, gateway: GatewayConfig, **kwargs: Any) -> None:
        super().__init__(app, http=EdgeProtocol, ws="none", **kwargs)
        self.gateway = gateway


class _Rejected(Exception):
    """Raised from a parser callback to stop parsing; the answer is in ``error``."""

    def __init__(self, error: ApiError) -> None:
        self.error = error


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of the module docstring."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.bounds: GatewayConfig = getattr(config, "gateway", None) or GatewayConfig()
        self.timeout_keep_alive = self.bounds.keep_alive_timeout  # type: ignore[assignment]
        self.in_head = True  # reading a request line and headers
        self.head_bytes = 0
        self.header_count = 0
        self.refused = False  # one connection too many: answered 503 once its head is in
        self.closing = False  # answered an error; dropping what still comes
        self.body_window_bytes = 0
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None

    # connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        bound = self.bounds.max_connections
        self.refused = bound > 0 and len(self.connections) > bound
        # a connection that never sends a request is idle from the start
        idle = self.bounds.header_timeout if self.refused else self.timeout_keep_alive
        self.timeout_keep_alive_task = self.loop.call_later(idle, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel(self.head_timer)
        self._cancel(self.body_timer)
        self.head_timer = self.body_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._unset_keepalive_if_required()
        if self.in_head:
            if self.head_timer is None:
                self.head_timer = self.loop.call_later(
                    self.bounds.header_timeout, self._head_too_slow
                )
            room = self.bounds.max_header_bytes - self.head_bytes
            if len(data) > room:
                # the parser never sees more of a head than the bound allows
                if not self._feed(data[:room]):
                    return
                if self.in_head:
                    self._reject(self._head_too_large())
                    return
                data = data[room:]
            else:
                self.head_bytes += len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; False when the connection was answered with an error."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrades here: the request is served as plain HTTP
        except httptools.HttpParserError as exc:
            context = exc.__context__
            if isinstance(context, _Rejected):
                self._reject(context.error)
            else:
                log.debug("invalid HTTP request: %s", type(exc).__name__)
                self._reject(BadRequest("The request is not valid HTTP/1.1.", code="invalid_http"))
            return False
        return not self.closing

    # parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > self.bounds.max_headers:
            raise _Rejected(
                HeadersTooLarge(
                    f"The request has more than {self.bounds.max_headers} headers "
                    "(gateway.max_headers).",
                    param="headers",
                )
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._cancel(self.head_timer)
        self.head_timer = None
        if self.refused:
            raise _Rejected(
                Overloaded(
                    "This access point has reached its limit of "
                    f"{self.bounds.max_connections} connections (gateway.max_connections); "
                    "retry shortly.",
                    headers={"retry-after": "1"},
                )
            )
        super().on_headers_complete()
        self.body_window_bytes = 0
        self.body_timer = self.loop.call_later(self.bounds.body_timeout, self._check_body)

    def on_body(self, body: bytes) -> None:
        self.body_window_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel(self.body_timer)
        self.body_timer = None
        self.in_head = True
        self.head_bytes = self.header_count = 0
        super().on_message_complete()

    # timers

    def _head_too_slow(self) -> None:
        self.head_timer = None
        if self.in_head and not self.transport.is_closing():
            self._reject(
                RequestTimeout(
                    "The request headers did not arrive within "
                    f"{self.bounds.header_timeout:g} s (gateway.header_timeout).",
                    param="headers",
                )
            )

    def _check_body(self) -> None:
        self.body_timer = None
        if self.transport.is_closing() or self.cycle is None or not self.cycle.more_body:
            return
        needed = max(1, int(self.bounds.body_min_rate * self.bounds.body_timeout))
        if self.flow.read_paused or self.body_window_bytes >= needed:
            self.body_window_bytes = 0  # the app is not reading, or the body progresses
            self.body_timer = self.loop.call_later(self.bounds.body_timeout, self._check_body)
            return
        log.info("closing a connection whose request body is too slow")
        cycle = self.cycle
        cycle.disconnected = True  # the app's receive() says http.disconnect, its sends are void
        cycle.message_event.set()
        error = RequestTimeout(
            f"The request body arrived slower than {self.bounds.body_min_rate} bytes/s over "
            f"{self.bounds.body_timeout:g} s (gateway.body_min_rate, gateway.body_timeout).",
            param="body",
        )
        self._reject(error, answer=not cycle.response_started)

    # answers

    def _head_too_large(self) -> ApiError:
        return HeadersTooLarge(
            f"The request line and headers exceed {self.bounds.max_header_bytes} bytes "
            "(gateway.max_header_bytes).",
            param="headers",
        )

    def _reject(self, error: ApiError, *, answer: bool = True) -> None:
        """Answer ``error`` with ``Connection: close``, then drop what else comes a moment."""
        if self.closing or self.transport.is_closing():
            return
        self.closing = True
        self._cancel(self.head_timer)
        self._cancel(self.body_timer)
        self.head_timer = self.body_timer = None
        self._unset_keepalive_if_required()
        if answer:
            self.transport.write(_answer(error, oip=getattr(self, "url", b"").startswith(b"/v2/")))
        try:
            self.transport.write_eof()
        except (NotImplementedError, OSError, RuntimeError):
            self.transport.close()
            return
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def _answer(error: ApiError, *, oip: bool) -> bytes:
    body = orjson.dumps({"error": error.message} if oip else error.body())
    reason = _REASONS.get(error.status, b"Error")
    head = [
        b"HTTP/1.1 %d %s" % (error.status, reason),
        b"content-type: application/json",
        b"content-length: %d" % len(body),
        b"connection: close",
        *(f"{k}: {v}".encode("latin-1") for k, v in error.headers.items()),
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
