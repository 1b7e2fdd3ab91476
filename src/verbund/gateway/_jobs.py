"""Training routes: OpenAI fine-tuning jobs, general training jobs, admin views, and
OIP v2 inference for the ``ft:`` models that succeeded jobs registered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.admission import Ask, receipt_plan
from verbund.errors import BadRequest
from verbund.gateway._deps import (
    data_class,
    json_body,
    principal,
    query_int,
    receipt_required,
    request_id,
    require,
    services,
    validated,
)
from verbund.gateway._oip import INFER_ENDPOINT
from verbund.gateway._services import Services
from verbund.jobs import (
    FT_PREFIX,
    FineTunedModel,
    NewJob,
    Resources,
    event,
    fine_tuning_job,
    training_job,
)
from verbund.store import TrainingJobRow
from verbund.tenancy import Permission, Principal

JOB_BODY_LIMIT = 64 * 1024
HOLD_GRACE_SECONDS = 3600.0  # a job's budget hold outlives its time limit by this much
FileId = Annotated[str, Field(min_length=1, max_length=128)]
Auto = Literal["auto"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Hyper(_Strict):
    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto | None = None
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto | None = None
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=100)] | Auto | None = None
    # Verbund's addition for language models (LoRA): the adapter's rank
    lora_rank: Annotated[int, Field(ge=1, le=256)] | Auto | None = None


class _Supervised(_Strict):
    hyperparameters: _Hyper | None = None


class _Method(_Strict):
    type: Literal["supervised"]
    supervised: _Supervised | None = None


Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]


class _FineTuneCreate(_Strict):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    training_file: FileId
    validation_file: FileId | None = None
    hyperparameters: _Hyper | None = None
    method: _Method | None = None
    suffix: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    metadata: Metadata | None = None
    integrations: list[Any] | None = None


class _Resources(_Strict):
    cpus: Annotated[int, Field(ge=1, le=1024)] | None = None
    memory_mb: Annotated[int, Field(ge=64)] | None = None
    gpus: Annotated[int, Field(ge=0, le=64)] | None = None
    gpu_type: Annotated[str, Field(max_length=64)] | None = None
    time_limit_minutes: Annotated[int, Field(ge=1, le=30 * 24 * 60)] | None = None


class _TrainingCreate(_Strict):
    recipe: Annotated[str, Field(min_length=1, max_length=64)]
    training_file: FileId
    validation_file: FileId | None = None
    params: Annotated[dict[str, Any], Field(max_length=64)] = {}
    resources: _Resources | None = None
    suffix: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    metadata: Metadata | None = None


def _limit(request: Request) -> int:
    return query_int(request, "limit", 20, 1, 100)


def _list(data: list[dict[str, Any]], has_more: bool) -> JSONResponse:
    return JSONResponse({"object": "list", "data": data, "has_more": has_more})


async def _principal(request: Request) -> tuple[Services, Principal]:
    return services(request), await principal(request)


# reads a job request's body: what the job would be (or a 400)
JobReader = Callable[[Services, Request, Principal, dict[str, Any]], Awaitable[NewJob]]
JobView = Callable[[TrainingJobRow, str | None], dict[str, Any]]


def _creator(
    endpoint: str, read: JobReader, view: JobView
) -> Callable[[Request], Awaitable[Response]]:
    """A job-creating route: admitted like any request that spends capacity, and against
    the budget with what the job asks for; the cost stays held until the job reports
    what it used."""

    async def create(request: Request) -> Response:
        svc, who = await _principal(request)
        async with svc.admission.enter(who, endpoint, request_id(request)) as entry:
            _, body = await json_body(request, JOB_BODY_LIMIT)
            new = await read(svc, request, who, body)
            res = new.resources
            budgets = svc.accounting.budgets
            cost = budgets.job_cost(cpus=res.cpus, gpus=res.gpus, minutes=res.time_limit_minutes)
            admitted = await entry.admit(Ask(model=new.model, data_class=new.data_class, cost=cost))
            row = await svc.jobs.create(new)
            hold = res.time_limit_minutes * 60.0 + HOLD_GRACE_SECONDS
            budgets.hold(row.id, who.institution.id, cost, hold)
            return admitted.respond(JSONResponse(view(row, None)))

    return create


# -- OpenAI fine-tuning ------------------------------------------------------------------


async def _fine_tune(
    svc: Services, request: Request, who: Principal, body: dict[str, Any]
) -> NewJob:
    req = validated(_FineTuneCreate, body)
    if req.integrations:
        raise BadRequest("Integrations are not supported.", param="integrations")
    site_models = await svc.jobs.site_models()  # what the sites' agents' runners list
    recipe = svc.jobs.recipes.for_base_model(req.model, site_models)
    hyper = req.hyperparameters
    if req.method is not None and req.method.supervised is not None:
        hyper = req.method.supervised.hyperparameters or hyper
    params = {k: v for k, v in (hyper.model_dump() if hyper else {}).items() if v is not None}
    if recipe.site_model:
        params["base_model"] = req.model  # a language model a site lists: it trains there
    elif "lora_rank" in params:
        raise BadRequest(
            "'lora_rank' applies to language models only.",
            code="invalid_value",
            param="hyperparameters.lora_rank",
        )
    return NewJob(
        kind="fine_tune",
        institution=who.institution,
        key_id=who.key_id,
        data_class=data_class(request, who),
        recipe=recipe,
        model=req.model,
        training_file=req.training_file,
        validation_file=req.validation_file,
        params=params,
        resources=recipe.resources,
        suffix=req.suffix,
        metadata=req.metadata,
        seed=req.seed,
    )


create_fine_tuning_job = _creator("/v1/fine_tuning/jobs", _fine_tune, fine_tuning_job)


async def list_fine_tuning_jobs(request: Request) -> Response:
    svc, who = await _principal(request)
    rows, more = await svc.jobs.list_jobs(
        who.institution.id, "fine_tune", request.query_params.get("after"), _limit(request)
    )
    return _list([fine_tuning_job(r, svc.jobs.note(r)) for r in rows], more)


async def get_fine_tuning_job(request: Request) -> Response:
    svc, who = await _principal(request)
    row = await svc.jobs.get(request.path_params["job_id"], who.institution.id, "fine_tune")
    return JSONResponse(fine_tuning_job(row, svc.jobs.note(row)))


async def cancel_fine_tuning_job(request: Request) -> Response:
    svc, who = await _principal(request)
    job_id = request.path_params["job_id"]
    await svc.jobs.get(job_id, who.institution.id, "fine_tune")
    row = await svc.jobs.cancel(job_id, who.institution.id, who.key_id)
    return JSONResponse(fine_tuning_job(row, svc.jobs.note(row)))


async def _events(request: Request, svc: Services, institution: str | None) -> Response:
    rows, more = await svc.jobs.events(
        request.path_params["job_id"],
        institution,
        request.query_params.get("after"),
        _limit(request),
    )
    return _list([event(r) for r in rows], more)


async def fine_tuning_events(request: Request) -> Response:
    svc, who = await _principal(request)
    await svc.jobs.get(request.path_params["job_id"], who.institution.id, "fine_tune")
    return await _events(request, svc, who.institution.id)


# -- general training jobs ---------------------------------------------------------------


def _check_base_model(svc: Services, params: dict[str, Any]) -> None:
    """A recipe that loads a base model loads one a site lists, by name; a path from the
    client would let it read any folder the site's runner can. Which sites list the name
    is placement's business (their agents report their base models)."""
    if "base_model_path" in params:
        raise BadRequest(
            "'params.base_model_path' is not accepted: name a base model the sites list "
            "in 'params.base_model'.",
            code="invalid_value",
            param="params.base_model_path",
        )


async def _training(
    svc: Services, request: Request, who: Principal, body: dict[str, Any]
) -> NewJob:
    req = validated(_TrainingCreate, body)
    recipe = svc.jobs.recipes.get(req.recipe)
    if len(orjson.dumps(req.params)) > 16 * 1024:
        raise BadRequest("'params' is larger than 16 KiB.", param="params")
    if recipe.site_model:
        _check_base_model(svc, req.params)
    asked = req.resources.model_dump(exclude_none=True) if req.resources else {}
    return NewJob(
        kind="training",
        institution=who.institution,
        key_id=who.key_id,
        data_class=data_class(request, who),
        recipe=recipe,
        model=recipe.name,
        training_file=req.training_file,
        validation_file=req.validation_file,
        params=req.params,
        resources=Resources(**{**recipe.resources.as_dict(), **asked}),
        suffix=req.suffix,
        metadata=req.metadata,
        seed=req.seed,
    )


create_training_job = _creator("/v1/training/jobs", _training, training_job)


async def list_training_jobs(request: Request) -> Response:
    svc, who = await _principal(request)
    rows, more = await svc.jobs.list_jobs(
        who.institution.id,
        None,
        request.query_params.get("after"),
        _limit(request),
        request.query_params.get("status") or None,
    )
    return _list([training_job(r, svc.jobs.note(r)) for r in rows], more)


async def get_training_job(request: Request) -> Response:
    svc, who = await _principal(request)
    row = await svc.jobs.get(request.path_params["job_id"], who.institution.id)
    return JSONResponse(training_job(row, svc.jobs.note(row)))


async def cancel_training_job(request: Request) -> Response:
    svc, who = await _principal(request)
    row = await svc.jobs.cancel(request.path_params["job_id"], who.institution.id, who.key_id)
    return JSONResponse(training_job(row, svc.jobs.note(row)))


async def training_events(request: Request) -> Response:
    svc, who = await _principal(request)
    return await _events(request, svc, who.institution.id)


async def list_recipes(request: Request) -> Response:
    svc, _ = await _principal(request)
    return _list(
        [
            {
                "object": "training.recipe",
                "id": r.name,
                "description": r.description,
                "data_format": r.data.value,
                "base_models": list(r.base_models),
                "resources": r.resources.as_dict(),
                "servable": r.servable,
                "tested": r.tested,
            }
            for r in sorted(svc.jobs.recipes.recipes.values(), key=lambda r: r.name)
        ],
        False,
    )


# -- admin ---------------------------------------------------------------------------------


_read_jobs = require(Permission.jobs_read)
_change_jobs = require(Permission.jobs_write)


async def admin_list_jobs(request: Request) -> Response:
    svc = services(request)
    await _read_jobs(request)
    rows, more = await svc.jobs.list_jobs(
        request.query_params.get("institution") or None,
        None,
        request.query_params.get("after"),
        _limit(request),
        request.query_params.get("status") or None,
    )
    return _list([training_job(r, svc.jobs.note(r)) for r in rows], more)


async def admin_get_job(request: Request) -> Response:
    svc = services(request)
    await _read_jobs(request)
    row = await svc.jobs.get(request.path_params["job_id"], None)
    return JSONResponse(training_job(row, svc.jobs.note(row)))


async def admin_cancel_job(request: Request) -> Response:
    svc = services(request)
    who = await _change_jobs(request)
    row = await svc.jobs.cancel(request.path_params["job_id"], None, who.id)
    return JSONResponse(training_job(row, svc.jobs.note(row)))


async def admin_job_events(request: Request) -> Response:
    svc = services(request)
    await _read_jobs(request)
    return await _events(request, svc, None)


# -- OIP v2 for ft: models ---------------------------------------------------------------


async def _ft_model(request: Request) -> tuple[Services, Principal, FineTunedModel]:
    svc, who = await _principal(request)
    name = FT_PREFIX + request.path_params["rest"]
    return svc, who, svc.jobs.model(name, who.institution, data_class(request, who))


async def ft_model_metadata(request: Request) -> Response:
    svc, _, model = await _ft_model(request)
    return JSONResponse(await svc.jobs.metadata(model))


async def ft_model_ready(request: Request) -> Response:
    svc, _, model = await _ft_model(request)
    await svc.jobs.metadata(model)  # loads it at its site: ready means servable now
    return JSONResponse({"name": model.name, "ready": True})


async def ft_model_infer(request: Request) -> Response:
    svc, who, model = await _ft_model(request)
    if receipt_required(request, who):
        # served by its site's agent from the job's artefacts, not through a relay that
        # signs: a request that needs a receipt fails closed, as where no site can sign
        receipt_plan(model.name, [])
    async with svc.admission.enter(who, INFER_ENDPOINT, request_id(request)) as entry:
        raw, body = await json_body(request)
        ask = Ask(model=model.name, data_class=data_class(request, who), request_bytes=len(raw))
        admitted = await entry.admit(ask)
        # served at the site that trained it, from the job's artefacts there
        admitted.record.site = model.site
        admitted.record.backend = f"agent:{model.site}"
        answer = await svc.jobs.infer(model, body)
        response = JSONResponse(answer, headers={"x-verbund-site": model.site})
        admitted.record.response_bytes = len(response.body)
        return admitted.respond(response)
