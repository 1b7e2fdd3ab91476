"""Training jobs at the site, for the access points: the runner's report (for placement),
handing a job over, following jobs, cancelling one, and OIP v2 inference on the models
the site's jobs trained (the access point relays its clients' requests here).

A model answers only for the institution whose job trained it (the access point names
the institution; any other gets 404, as for a model that does not exist).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from verbund.agent._auth import Role, require
from verbund.agent._services import AgentServices
from verbund.errors import BadRequest, NotFound
from verbund.jobs import (
    FT_PREFIX,
    INSTITUTION_HEADER,
    FineTunedModel,
    SiteJobs,
    site_event,
    site_state,
)

__all__ = ["json_body", "routes"]

MAX_SYNC_JOBS = 1000
JOB_BODY_LIMIT = 64 * 1024


def _jobs(request: Request) -> tuple[SiteJobs, str]:
    caller = require(request, Role.access_point)
    svc: AgentServices = request.app.state.services
    return svc.jobs, caller.name


async def json_body(request: Request, limit: int = JOB_BODY_LIMIT) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > limit:
        raise BadRequest("The request body is too large.", code="body_too_large")
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("The body must be JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.", code="invalid_json")
    return body


async def runner(request: Request) -> Response:
    jobs, _ = _jobs(request)
    report = await jobs.report()
    if report is None:
        raise NotFound("This site runs no training jobs.", code="no_runner")
    return JSONResponse(report.as_dict())


async def accept(request: Request) -> Response:
    jobs, caller = _jobs(request)
    row = await jobs.accept(await json_body(request), caller)
    return JSONResponse(site_state(row), status_code=201)


async def changes(request: Request) -> Response:
    jobs, _ = _jobs(request)
    known = (await json_body(request, 1024 * 1024)).get("jobs")
    if not isinstance(known, dict) or len(known) > MAX_SYNC_JOBS:
        raise BadRequest(f"'jobs' must map at most {MAX_SYNC_JOBS} job ids to event counts.")
    try:
        wanted = {str(k): int(v or 0) for k, v in known.items()}
    except (TypeError, ValueError):
        raise BadRequest("'jobs' must map job ids to event counts.") from None
    out = []
    for row, events in await jobs.changes(wanted):
        out.append({**site_state(row), "events": [site_event(e) for e in events]})
    return JSONResponse({"jobs": out})


async def get_job(request: Request) -> Response:
    jobs, _ = _jobs(request)
    return JSONResponse(site_state(await jobs.get(request.path_params["job_id"])))


async def cancel(request: Request) -> Response:
    jobs, caller = _jobs(request)
    body = await json_body(request)
    actor = f"{body.get('actor') or 'a client'} through {caller}"
    return JSONResponse(site_state(await jobs.cancel(request.path_params["job_id"], actor)))


def _model(request: Request) -> tuple[SiteJobs, FineTunedModel]:
    jobs, _ = _jobs(request)
    name = FT_PREFIX + request.path_params["rest"]
    return jobs, jobs.model(name, request.headers.get(INSTITUTION_HEADER, ""))


async def model_metadata(request: Request) -> Response:
    jobs, model = _model(request)
    return JSONResponse(await jobs.predictors.metadata(model))


async def model_infer(request: Request) -> Response:
    jobs, model = _model(request)
    body = await json_body(request, 64 * 1024 * 1024)
    return JSONResponse(await jobs.predictors.infer(model, body))


def routes() -> list[BaseRoute]:
    return [
        Route("/jobs", accept, methods=["POST"]),
        Route("/jobs/runner", runner, methods=["GET"]),
        Route("/jobs/changes", changes, methods=["POST"]),
        Route("/jobs/{job_id}", get_job, methods=["GET"]),
        Route("/jobs/{job_id}/cancel", cancel, methods=["POST"]),
        Route("/trained/ft:{rest:path}/infer", model_infer, methods=["POST"]),
        Route("/trained/ft:{rest:path}", model_metadata, methods=["GET"]),
    ]
