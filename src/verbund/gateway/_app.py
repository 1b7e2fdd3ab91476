"""The access point's ASGI app: routes, the request-id middleware and the error handler."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verbund import console
from verbund.config import FederationConfig
from verbund.federation import TransportFactory
from verbund.gateway import (
    _accounting,
    _admin,
    _batches,
    _erasure,
    _files,
    _jobs,
    _keys,
    _me,
    _oip,
    _openai,
    _ops,
    _people,
    _responses,
    _signin,
    _trust,
)
from verbund.gateway._overload import OverloadMiddleware
from verbund.gateway._services import AgentTransport, Services
from verbund.server import Drain, error_handlers
from verbund.telemetry._tracing import Tracer

log = logging.getLogger("verbund.gateway")


def random_uuid() -> str:
    """A random (version 4) UUID in its usual text form, at a fifth of ``uuid.uuid4()``'s
    cost. A plain UUID because some model servers (llama-cpp-python) refuse other
    ``X-Request-Id`` forms."""
    h = os.urandom(16).hex()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


class RequestIdMiddleware:
    """Gives every request an id (``request.state.request_id``) and echoes it as a header.

    While the access point drains, every answer also says ``Connection: close``: clients
    and load balancers then open their next connection, to another access point, rather
    than reuse one that is about to be closed."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = random_uuid()
        scope.setdefault("state", {})["request_id"] = request_id
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", raw_id))
                if self.drain.draining:
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(
    config: FederationConfig,
    *,
    admin_key: str | None = None,
    transport_factory: TransportFactory | None = None,
    background: bool = True,
    tracer: Tracer | None = None,
    on_started: Callable[[Drain], None] | None = None,
    local_clock: Callable[[], float] = time.time,
    agent_transport: AgentTransport | None = None,
) -> Starlette:
    """Build one access point. ``background=False`` skips probes and flushing (unit tests);
    ``on_started`` is the process runner's hook, called with the access point's drain once
    the services are up (:func:`verbund.server.serving`); ``local_clock`` stands in for
    this host's clock (tests of clock skew); ``agent_transport`` puts in-process site
    agents behind the access point's clients of them."""
    svc = Services.build(
        config, admin_key, transport_factory, tracer, local_clock, agent_transport=agent_transport
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await svc.start(background=background)
        if on_started is not None:
            on_started(svc.drain)
        try:
            yield
        finally:
            await svc.stop()

    routes = [
        Route("/v1/models", _openai.list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", _openai.get_model, methods=["GET"]),
        Route("/v1/chat/completions", _openai.chat_completions, methods=["POST"]),
        Route("/v1/completions", _openai.completions, methods=["POST"]),
        Route("/v1/embeddings", _openai.embeddings, methods=["POST"]),
        Route("/v1/responses", _responses.create_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", _responses.get_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", _responses.delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/cancel", _responses.cancel_response, methods=["POST"]),
        Route("/v1/files", _files.create_file, methods=["POST"]),
        Route("/v1/files", _files.list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", _files.get_file, methods=["GET"]),
        Route("/v1/files/{file_id}", _files.delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", _files.file_content, methods=["GET"]),
        Route("/v1/batches", _batches.create_batch, methods=["POST"]),
        Route("/v1/batches", _batches.list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", _batches.get_batch, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", _batches.cancel_batch, methods=["POST"]),
        Route("/healthz", _ops.healthz, methods=["GET"]),
        Route("/readyz", _ops.readyz, methods=["GET"]),
        Route("/status", _ops.status, methods=["GET"]),
        Route("/metrics", _ops.metrics, methods=["GET"]),
        Route("/admin/drain", _admin.drain_access_point, methods=["POST"]),
        Route("/admin/sites", _admin.list_sites, methods=["GET"]),
        Route("/admin/sites/{name}", _admin.get_site, methods=["GET"]),
        Route("/admin/sites/{name}/drain", _admin.drain_site, methods=["POST"]),
        Route("/admin/sites/{name}/maintenance", _admin.maintain_site, methods=["POST"]),
        Route("/admin/sites/{name}/resume", _admin.resume_site, methods=["POST"]),
        Route("/admin/keys", _keys.create_key, methods=["POST"]),
        Route("/admin/keys", _keys.list_keys, methods=["GET"]),
        Route("/admin/keys/{key_id}", _keys.revoke_key, methods=["DELETE"]),
        Route("/admin/keys/{key_id}", _keys.update_key, methods=["PATCH"]),
        Route("/admin/institutions", _admin.list_institutions, methods=["GET"]),
        Route("/admin/institutions", _admin.create_institution, methods=["POST"]),
        Route("/admin/institutions/{institution_id}", _admin.update_institution, methods=["PATCH"]),
        Route("/admin/usage", _admin.usage, methods=["GET"]),
        Route("/admin/audit", _admin.audit_entries, methods=["GET"]),
        Route("/admin/audit/verify", _admin.audit_verify, methods=["GET"]),
        Route("/admin/audit/checkpoints", _trust.list_checkpoints, methods=["GET"]),
        Route("/admin/erasure", _erasure.erase, methods=["POST"]),
        Route("/admin/audit/checkpoints", _trust.post_checkpoints, methods=["POST"]),
        Route(
            "/admin/audit/checkpoints/verify",
            _trust.verify_against_checkpoints,
            methods=["GET"],
        ),
        # people: sign-in with OpenID Connect, their own keys and usage
        Route("/auth/providers", _signin.providers, methods=["GET"]),
        Route("/auth/login", _signin.login, methods=["GET"]),
        Route("/auth/callback", _signin.callback, methods=["GET"]),
        Route("/auth/session", _signin.session, methods=["GET"]),
        Route("/auth/logout", _signin.logout, methods=["POST"]),
        Route("/auth/signed-out", _signin.signed_out, methods=["GET"]),
        Route("/v1/me", _me.me, methods=["GET"]),
        Route("/v1/me/keys", _me.list_keys, methods=["GET"]),
        Route("/v1/me/keys", _me.create_key, methods=["POST"]),
        Route("/v1/me/keys/{key_id}", _me.revoke_key, methods=["DELETE"]),
        Route("/v1/me/usage", _me.usage, methods=["GET"]),
        Route("/admin/people", _people.list_people, methods=["GET"]),
        Route("/admin/people/{person_id}", _people.update_person, methods=["PATCH"]),
        # accounting: settlement between partners, budgets
        Route("/admin/settlement", _accounting.settlement, methods=["GET"]),
        Route("/admin/budgets", _accounting.budgets, methods=["GET"]),
        # training jobs: fine-tuning, training, admin views, ft: model serving
        Route("/v1/fine_tuning/jobs", _jobs.create_fine_tuning_job, methods=["POST"]),
        Route("/v1/fine_tuning/jobs", _jobs.list_fine_tuning_jobs, methods=["GET"]),
        Route("/v1/fine_tuning/jobs/{job_id}", _jobs.get_fine_tuning_job, methods=["GET"]),
        Route(
            "/v1/fine_tuning/jobs/{job_id}/cancel", _jobs.cancel_fine_tuning_job, methods=["POST"]
        ),
        Route("/v1/fine_tuning/jobs/{job_id}/events", _jobs.fine_tuning_events, methods=["GET"]),
        Route("/v1/training/recipes", _jobs.list_recipes, methods=["GET"]),
        Route("/v1/training/jobs", _jobs.create_training_job, methods=["POST"]),
        Route("/v1/training/jobs", _jobs.list_training_jobs, methods=["GET"]),
        Route("/v1/training/jobs/{job_id}", _jobs.get_training_job, methods=["GET"]),
        Route("/v1/training/jobs/{job_id}/cancel", _jobs.cancel_training_job, methods=["POST"]),
        Route("/v1/training/jobs/{job_id}/events", _jobs.training_events, methods=["GET"]),
        Route("/admin/jobs", _jobs.admin_list_jobs, methods=["GET"]),
        Route("/admin/jobs/{job_id}", _jobs.admin_get_job, methods=["GET"]),
        Route("/admin/jobs/{job_id}/cancel", _jobs.admin_cancel_job, methods=["POST"]),
        Route("/admin/jobs/{job_id}/events", _jobs.admin_job_events, methods=["GET"]),
        # OIP v2 for ft: models only; must come before a general /v2/models/{name} route
        Route("/v2/models/ft:{rest:path}/infer", _jobs.ft_model_infer, methods=["POST"]),
        Route("/v2/models/ft:{rest:path}/ready", _jobs.ft_model_ready, methods=["GET"]),
        Route("/v2/models/ft:{rest:path}", _jobs.ft_model_metadata, methods=["GET"]),
        # the web console for people (pages, their assets)
        *console.console_routes(),
        # Open Inference Protocol v2: health, model metadata/ready, infer, fallback
        *_oip.routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestIdMiddleware, drain=svc.drain),
            Middleware(OverloadMiddleware, overload=svc.overload),
        ],
        lifespan=lifespan,
        exception_handlers=error_handlers("access point", log),
    )
    # Starlette would answer /v1/models/ with a redirect built from the client's Host
    # header (an open redirect, before authentication); here it is a 404 like any
    # unknown path.
    app.router.redirect_slashes = False
    app.state.services = svc
    return app
