"""The error handlers the access point and the site agent share: OpenAI's shape, no leak."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from verbund.errors import ModelNotFound
from verbund.server import error_handlers


async def _secret_failure(request: Request) -> Response:
    raise RuntimeError("db password is hunter2")


async def _no_model(request: Request) -> Response:
    raise ModelNotFound("no model 'x'")


def _client() -> httpx.AsyncClient:
    app = Starlette(
        routes=[Route("/boom", _secret_failure), Route("/model", _no_model)],
        exception_handlers=error_handlers("site agent", logging.getLogger("verbund.test")),
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_an_unexpected_error_names_the_service_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _client() as client:
        r = await client.get("/boom")
    assert r.status_code == 500
    assert r.json() == {
        "error": {
            "message": "Internal error in the site agent.",
            "type": "server_error",
            "code": "internal_error",
            "param": None,
        }
    }
    assert "hunter2" not in r.text
    assert any(rec.exc_info for rec in caplog.records if rec.name == "verbund.test")


async def test_api_errors_and_starlettes_own_come_out_in_openais_shape() -> None:
    async with _client() as client:
        missing = await client.get("/model")
        unknown = await client.get("/nowhere")
        wrong = await client.post("/model")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "model_not_found")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (405, "method_not_allowed")
    assert wrong.json()["error"]["type"] == "invalid_request_error"
