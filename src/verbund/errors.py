"""Every error Verbund raises, and how it looks to an API client.

The tree::

    VerbundError                      base; never raised itself
    ├── ConfigError                   the federation config is invalid (not an HTTP error)
    ├── StoreError                    the store could not be reached or refused a write
    │   └── StoreUnavailable          (also an ApiError, below) the store is away
    ├── RunnerError                   a site's job runner failed (command failed, unreachable)
    ├── JobStateError                 a job was to move to a status its own does not lead to
    └── ApiError                      has an HTTP status and an OpenAI error body
        ├── BadRequest                400 invalid_request_error
        │   └── InvalidJSON           400 the body is not JSON / not an object
        ├── AuthenticationError       401 missing, malformed, unknown or revoked key
        │   └── SignInFailed          401 an OpenID Connect sign-in did not prove who it is
        ├── PermissionDenied          403 the key may not do this
        │   └── PolicyViolation       403 no site may take this request's data
        ├── NotFound                  404
        │   └── ModelNotFound         404 model_not_found
        ├── Conflict                  409 the object's state does not allow this
        ├── RequestTimeout            408 the client sent its request too slowly
        ├── PayloadTooLarge           413
        ├── HeadersTooLarge           431 too many or too large request headers
        ├── RateLimited               429
        │   └── TooManyConcurrent     429 the key or institution has its limit of requests open
        ├── ClientClosed              499 the client left before its answer was ready
        ├── BudgetExceeded            429 insufficient_quota: the monthly budget is used up
        ├── StoreUnavailable          503 store_unavailable, Retry-After: the store is away
        ├── Overloaded                503 this access point sheds load (Retry-After)
        ├── NotConfigured             503 a feature the request needs is not set up here
        └── UpstreamError             5xx a model server failed us
            ├── NoBackendAvailable    503 compliant sites exist, none can serve now
            │   └── BackendRefused    503 the one tried refused the connection (not running)
            ├── ModelStarting         503 an on-demand model is starting (Retry-After)
            ├── BackendLost           502 the connection broke, or a relay could not reach it
            ├── UpstreamTimeout       504
            └── SiteAgentError        502 a site agent refused us or answered nonsense
                └── SiteAgentUnavailable  503 a site agent could not be reached in time

Foreign exceptions (httpx, SQLAlchemy) are converted where they enter (the store's
sessions turn connection errors into :class:`StoreUnavailable`); the single
handler in :mod:`verbund.gateway` turns :class:`ApiError` into
``{"error": {"message", "type", "code", "param"}}`` and anything else into a generic 500
that carries no detail.
"""

from __future__ import annotations

from typing import Any


class VerbundError(Exception):
    """Base of all Verbund errors."""


class ConfigError(VerbundError):
    """The federation config is invalid; ``problems`` lists (field path, message)."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        lines = [f"{where}{path or '<root>'}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


class StoreError(VerbundError):
    """The store failed; callers decide whether to degrade or fail closed."""


class RunnerError(VerbundError):
    """A site's job runner failed; the job service retries or fails the job with the reason."""


class JobStateError(VerbundError):
    """A status change the job's transition table does not allow: a bug or a lost race."""


class ApiError(VerbundError):
    """An error with an HTTP status and an OpenAI-shaped body."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }


class BadRequest(ApiError):
    status = 400
    type = "invalid_request_error"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class AuthenticationError(ApiError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class SignInFailed(AuthenticationError):
    """The identity provider's answer did not prove who signed in (bad state, token)."""

    code = "sign_in_failed"


class PermissionDenied(ApiError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class PolicyViolation(PermissionDenied):
    """No site is allowed to take the request; the message names each constraint."""

    code = "policy_violation"


class NotFound(ApiError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(ApiError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RequestTimeout(ApiError):
    """The request's headers or body came too slowly; the connection is closed after this."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class HeadersTooLarge(ApiError):
    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"


class ClientClosed(ApiError):
    """The client disconnected while its request waited for a backend; nobody reads this."""

    status = 499  # nginx's "client closed request"
    type = "invalid_request_error"
    code = "client_closed_request"


class RateLimited(ApiError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class TooManyConcurrent(RateLimited):
    code = "concurrency_limit_exceeded"


class BudgetExceeded(ApiError):
    """The institution's monthly budget is used up and it asked for a hard stop."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class StoreUnavailable(ApiError, StoreError):
    """The store is away: a route answers 503 and a background loop retries later."""

    status = 503
    type = "server_error"
    code = "store_unavailable"


class Overloaded(ApiError):
    """This access point is at its limit; another one (or a retry shortly) will serve."""

    status = 503
    type = "server_error"
    code = "overloaded"


class NotConfigured(ApiError):
    """The request needs something the operator has not set up at this access point
    (e.g. the key of stored responses); the message names what is missing."""

    status = 503
    type = "server_error"
    code = "not_configured"


class UpstreamError(ApiError):
    status = 502
    type = "server_error"
    code = "upstream_error"


class NoBackendAvailable(UpstreamError):
    status = 503
    code = "no_backend_available"


class BackendRefused(NoBackendAvailable):
    """A model server refused the connection: nothing listens there (any more). Apart
    from the other 503s because an on-demand instance that ended looks like this, and a
    request that got no byte from it waits for its replacement."""


class BackendLost(UpstreamError):
    """The connection to a model server broke, or a gateway before it (a site agent's
    relay: HTTP 502) could not reach it: the server may be gone. Like
    :class:`BackendRefused`, what a lost on-demand instance looks like to a request."""


class ModelStarting(UpstreamError):
    """An on-demand model is not ready yet and did not become ready within the wait (or
    its queue is full): ``Retry-After`` says when it is expected."""

    status = 503
    code = "model_starting"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class SiteAgentError(UpstreamError):
    """A site agent refused this access point (its credential) or answered nonsense."""

    code = "site_agent_error"


class SiteAgentUnavailable(SiteAgentError):
    """A site agent did not answer (refused connection, time-out, broken TLS)."""

    status = 503
    code = "site_agent_unavailable"


def internal_error_body(service: str = "access point") -> dict[str, Any]:
    """The body of an unexpected error in ``service``: no detail may leak."""
    return {
        "error": {
            "message": f"Internal error in the {service}.",
            "type": "server_error",
            "code": "internal_error",
            "param": None,
        }
    }
