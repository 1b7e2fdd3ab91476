"""Training routes: OpenAI fine-tuning jobs, general training jobs, admin views, and
OIP v2 inference for the ``ft:`` models that succeeded jobs registered."""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from verbund.accounting import UsageRecord
from verbund.errors import ApiError, BadRequest, ModelNotFound
from verbund.gateway._auth import Principal, authenticate, require_admin
from verbund.gateway._body import parse_object, read_body
from verbund.gateway._services import Services
from verbund.jobs import FT_PREFIX, NewJob, Resources, event, fine_tuning_job, training_job
from verbund.policy import DATA_CLASS_HEADER, request_data_class
from verbund.tenancy import quota_limits

JOB_BODY_LIMIT = 64 * 1024
FileId = Annotated[str, Field(min_length=1, max_length=128)]
Auto = Literal["auto"]
M = TypeVar("M", bound=BaseModel)
_UNION_TAG = re.compile(r"[-\[]")
_TYPE_TAGS = {"int", "float", "str", "bool", "dict", "list", "none"}


def _svc(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Hyper(_Strict):
    n_epochs: Annotated[int, Field(ge=1, le=50)] | Auto | None = None
    batch_size: Annotated[int, Field(ge=1, le=256)] | Auto | None = None
    learning_rate_multiplier: Annotated[float, Field(gt=0, le=100)] | Auto | None = None


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


def _validated(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        # drop pydantic's union-member tags ("constrained-int", "literal['auto']")
        parts = [str(p) for p in err["loc"] if not _UNION_TAG.search(str(p))]
        field = ".".join(p for p in parts if p not in _TYPE_TAGS) or None
        raise BadRequest(
            f"{field}: {err['msg']}" if field else err["msg"], code="invalid_value", param=field
        ) from None


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise BadRequest("'limit' must be an integer from 1 to 100.", param="limit")
    return int(raw)


def _list(data: list[dict[str, Any]], has_more: bool) -> JSONResponse:
    return JSONResponse({"object": "list", "data": data, "has_more": has_more})


async def _principal(request: Request) -> tuple[Services, Principal]:
    svc = _svc(request)
    return svc, await authenticate(request, svc)


def _data_class(request: Request, principal: Principal) -> Any:
    return request_data_class(
        principal.institution.default_data_class, request.headers.get(DATA_CLASS_HEADER)
    )


# -- OpenAI fine-tuning ------------------------------------------------------------------


async def create_fine_tuning_job(request: Request) -> Response:
    svc, principal = await _principal(request)
    body = parse_object(await read_body(request, JOB_BODY_LIMIT))
    req = _validated(_FineTuneCreate, body)
    if req.integrations:
        raise BadRequest("Integrations are not supported.", param="integrations")
    recipe = svc.jobs.recipes.for_base_model(req.model)
    hyper = req.hyperparameters
    if req.method is not None and req.method.supervised is not None:
        hyper = req.method.supervised.hyperparameters or hyper
    params = {k: v for k, v in (hyper.model_dump() if hyper else {}).items() if v is not None}
    row = await svc.jobs.create(
        NewJob(
            kind="fine_tune",
            institution=principal.institution,
            key_id=principal.key_id,
            data_class=_data_class(request, principal),
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
    )
    return JSONResponse(fine_tuning_job(row))


async def list_fine_tuning_jobs(request: Request) -> Response:
    svc, principal = await _principal(request)
    rows, more = await svc.jobs.list_jobs(
        principal.institution.id, "fine_tune", request.query_params.get("after"), _limit(request)
    )
    return _list([fine_tuning_job(r) for r in rows], more)


async def get_fine_tuning_job(request: Request) -> Response:
    svc, principal = await _principal(request)
    row = await svc.jobs.get(request.path_params["job_id"], principal.institution.id, "fine_tune")
    return JSONResponse(fine_tuning_job(row))


async def cancel_fine_tuning_job(request: Request) -> Response:
    svc, principal = await _principal(request)
    job_id = request.path_params["job_id"]
    await svc.jobs.get(job_id, principal.institution.id, "fine_tune")
    row = await svc.jobs.cancel(job_id, principal.institution.id, principal.key_id)
    return JSONResponse(fine_tuning_job(row))


async def _events(request: Request, svc: Services, institution: str | None) -> Response:
    rows, more = await svc.jobs.events(
        request.path_params["job_id"],
        institution,
        request.query_params.get("after"),
        _limit(request),
    )
    return _list([event(r) for r in rows], more)


async def fine_tuning_events(request: Request) -> Response:
    svc, principal = await _principal(request)
    await svc.jobs.get(request.path_params["job_id"], principal.institution.id, "fine_tune")
    return await _events(request, svc, principal.institution.id)


# -- general training jobs ---------------------------------------------------------------


async def create_training_job(request: Request) -> Response:
    svc, principal = await _principal(request)
    body = parse_object(await read_body(request, JOB_BODY_LIMIT))
    req = _validated(_TrainingCreate, body)
    recipe = svc.jobs.recipes.get(req.recipe)
    if len(orjson.dumps(req.params)) > 16 * 1024:
        raise BadRequest("'params' is larger than 16 KiB.", param="params")
    asked = req.resources.model_dump(exclude_none=True) if req.resources else {}
    row = await svc.jobs.create(
        NewJob(
            kind="training",
            institution=principal.institution,
            key_id=principal.key_id,
            data_class=_data_class(request, principal),
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
    )
    return JSONResponse(training_job(row))


async def list_training_jobs(request: Request) -> Response:
    svc, principal = await _principal(request)
    rows, more = await svc.jobs.list_jobs(
        principal.institution.id,
        None,
        request.query_params.get("after"),
        _limit(request),
        request.query_params.get("status") or None,
    )
    return _list([training_job(r) for r in rows], more)


async def get_training_job(request: Request) -> Response:
    svc, principal = await _principal(request)
    row = await svc.jobs.get(request.path_params["job_id"], principal.institution.id)
    return JSONResponse(training_job(row))


async def cancel_training_job(request: Request) -> Response:
    svc, principal = await _principal(request)
    row = await svc.jobs.cancel(
        request.path_params["job_id"], principal.institution.id, principal.key_id
    )
    return JSONResponse(training_job(row))


async def training_events(request: Request) -> Response:
    svc, principal = await _principal(request)
    return await _events(request, svc, principal.institution.id)


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


async def admin_list_jobs(request: Request) -> Response:
    svc = _svc(request)
    require_admin(request, svc)
    rows, more = await svc.jobs.list_jobs(
        request.query_params.get("institution") or None,
        None,
        request.query_params.get("after"),
        _limit(request),
        request.query_params.get("status") or None,
    )
    return _list([training_job(r) for r in rows], more)


async def admin_get_job(request: Request) -> Response:
    svc = _svc(request)
    require_admin(request, svc)
    return JSONResponse(training_job(await svc.jobs.get(request.path_params["job_id"], None)))


async def admin_cancel_job(request: Request) -> Response:
    svc = _svc(request)
    actor = require_admin(request, svc)
    row = await svc.jobs.cancel(request.path_params["job_id"], None, actor)
    return JSONResponse(training_job(row))


async def admin_job_events(request: Request) -> Response:
    svc = _svc(request)
    require_admin(request, svc)
    return await _events(request, svc, None)


# -- OIP v2 for ft: models ---------------------------------------------------------------


async def _ft_model(request: Request) -> tuple[Services, Principal, Any]:
    svc, principal = await _principal(request)
    name = FT_PREFIX + request.path_params["rest"]
    model = svc.jobs.models.get(name, principal.institution.id)
    if model is None or not model.servable:
        raise ModelNotFound(f"The model '{name}' does not exist.", param="model")
    return svc, principal, model


async def ft_model_metadata(request: Request) -> Response:
    svc, _, model = await _ft_model(request)
    return JSONResponse(await svc.jobs.predictors.metadata(model))


async def ft_model_ready(request: Request) -> Response:
    svc, _, model = await _ft_model(request)
    await svc.jobs.predictors.metadata(model)  # loads it: ready means servable now
    return JSONResponse({"name": model.name, "ready": True})


async def ft_model_infer(request: Request) -> Response:
    svc, principal, model = await _ft_model(request)
    started = time.perf_counter()
    body = parse_object(await read_body(request, svc.config.limits.max_body_bytes))
    request_id: str = request.state.request_id
    await svc.quotas.admit(request_id, quota_limits(principal.institution, principal.key), 0)
    record = UsageRecord(
        request_id=request_id,
        access_point=svc.config.gateway.name,
        institution_id=principal.institution.id,
        key_id=principal.key_id,
        endpoint="/v2/models/infer",
        model=model.name,
        site="",
        backend="access-point",
    )
    try:
        answer = await svc.jobs.predictors.infer(model, body)
    except ApiError as exc:
        record.status, record.http_status = "rejected", exc.status
        raise
    finally:
        record.latency_ms = (time.perf_counter() - started) * 1000.0
        svc.on_usage(record)
    return JSONResponse(answer)
