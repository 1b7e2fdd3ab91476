"""Checking a batch input file before anything runs.

Every line must be a JSON object with a unique ``custom_id``, ``method`` ``POST``, a
``url`` equal to the batch's endpoint and a ``body`` that the endpoint accepts, naming a
model the institution may use; all lines must name the same model. A batch of Open
Inference Protocol requests has the model's inference route as its endpoint
(``/v2/models/{name}/infer``), and every line the same ``url``. Lines are read in a
stream with a bound on their length, so a line of many megabytes costs no memory. The
result is either the items (where each line is in the file) or the errors, by line.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from verbund.errors import ApiError

__all__ = [
    "ENDPOINTS",
    "OIP_USAGE_ENDPOINT",
    "BatchLineError",
    "ItemRef",
    "Validation",
    "oip_model",
    "split_lines",
    "validate_input",
]

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
# OIP inference as a batch endpoint: the model (and version) are in the path; the store
# keeps at most 64 characters of an endpoint
_OIP_ENDPOINT = re.compile(
    r"^/v2/models/(?P<model>[A-Za-z0-9][A-Za-z0-9._:-]{0,127})"
    r"(?:/versions/[A-Za-z0-9][A-Za-z0-9._-]{0,63})?/infer$"
)
MAX_ENDPOINT = 64
OIP_USAGE_ENDPOINT = "/v2/infer"  # as interactive OIP inference is recorded
MAX_CUSTOM_ID = 512
MAX_ERRORS = 100


@dataclass(frozen=True, slots=True)
class ItemRef:
    """One request of the input file: its line number (from 1) and where its bytes are."""

    line: int
    custom_id: str
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class BatchLineError:
    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(slots=True)
class Validation:
    items: list[ItemRef] = field(default_factory=list)
    errors: list[BatchLineError] = field(default_factory=list)
    model: str = ""
    error_count: int = 0

    def error(self, err: BatchLineError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(err)


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    offset: int
    length: int
    data: bytes | None  # None: longer than the limit (its bytes were not kept)


async def split_lines(chunks: AsyncIterable[bytes], max_line: int) -> AsyncIterator[Line]:
    """Lines of a byte stream (``\\n``-separated, a trailing ``\\r`` kept), bounded in memory."""
    buf = bytearray()
    too_long = False
    start = 0  # offset of the current line in the file
    pos = 0  # offset of the next byte to read
    number = 1
    async for chunk in chunks:
        view = memoryview(chunk)
        i = 0
        while i < len(view):
            nl = chunk.find(b"\n", i)
            end = len(view) if nl < 0 else nl
            if not too_long:
                buf += view[i:end]
                if len(buf) > max_line:
                    too_long = True
                    buf.clear()
            if nl < 0:
                pos += len(view) - i
                break
            pos += nl + 1 - i
            length = pos - start  # including the newline
            yield Line(number, start, length, None if too_long else bytes(buf))
            buf.clear()
            too_long, start, number = False, pos, number + 1
            i = nl + 1
    if pos > start:
        yield Line(number, start, pos - start, None if too_long else bytes(buf))


def oip_model(endpoint: str) -> str | None:
    """The model of an OIP inference endpoint (``/v2/models/{name}[/versions/{v}]/infer``),
    or None when ``endpoint`` is not one."""
    found = _OIP_ENDPOINT.match(endpoint) if len(endpoint) <= MAX_ENDPOINT else None
    return found.group("model") if found else None


def _api_error(exc: ApiError, line: int, prefix: str = "body.") -> BatchLineError:
    param = f"{prefix}{exc.param}" if exc.param else None
    return BatchLineError(exc.code or "invalid_request", exc.message, line, param)


async def validate_input(
    chunks: AsyncIterable[bytes],
    endpoint: str,
    *,
    max_requests: int,
    max_line_bytes: int,
    check_body: Callable[[dict[str, Any]], str],
    check_model: Callable[[str], None],
) -> Validation:
    """``check_body`` returns the body's model or raises; ``check_model`` raises if not allowed."""
    v = Validation()
    seen: set[str] = set()
    model_errors: dict[str, ApiError | None] = {}
    async for ln in split_lines(chunks, max_line_bytes):
        if ln.number % 256 == 0:
            await asyncio.sleep(0)  # a large file must not hold up interactive requests
        if ln.data is None:
            v.error(
                BatchLineError(
                    "line_too_long",
                    f"The line is longer than the limit of {max_line_bytes} bytes.",
                    ln.number,
                )
            )
            continue
        if not ln.data.strip():
            continue  # blank lines (e.g. a trailing newline) are allowed
        if len(v.items) + v.error_count >= max_requests:
            v.error(
                BatchLineError(
                    "too_many_requests",
                    f"The file has more than {max_requests} requests.",
                    ln.number,
                )
            )
            break
        try:
            obj = orjson.loads(ln.data)
        except orjson.JSONDecodeError:
            v.error(BatchLineError("invalid_json_line", "The line is not valid JSON.", ln.number))
            continue
        if not isinstance(obj, dict):
            v.error(
                BatchLineError("invalid_json_line", "The line is not a JSON object.", ln.number)
            )
            continue
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
            v.error(
                BatchLineError(
                    "invalid_custom_id",
                    "'custom_id' must be a non-empty string of at most "
                    f"{MAX_CUSTOM_ID} characters.",
                    ln.number,
                    "custom_id",
                )
            )
            continue
        if custom_id in seen:
            v.error(
                BatchLineError(
                    "duplicate_custom_id",
                    "The custom_id is used by an earlier line; each must be unique.",
                    ln.number,
                    "custom_id",
                )
            )
            continue
        seen.add(custom_id)
        if obj.get("method") != "POST":
            v.error(
                BatchLineError("invalid_method", "'method' must be 'POST'.", ln.number, "method")
            )
            continue
        if obj.get("url") != endpoint:
            v.error(
                BatchLineError(
                    "invalid_url",
                    f"'url' must be the batch's endpoint '{endpoint}'.",
                    ln.number,
                    "url",
                )
            )
            continue
        body = obj.get("body")
        if not isinstance(body, dict):
            v.error(BatchLineError("invalid_body", "'body' must be an object.", ln.number, "body"))
            continue
        if body.get("stream") is True:
            v.error(
                BatchLineError(
                    "invalid_body", "Batch requests cannot stream.", ln.number, "body.stream"
                )
            )
            continue
        try:
            model = check_body(body)
        except ApiError as exc:
            v.error(_api_error(exc, ln.number))
            continue
        if model not in model_errors:
            try:
                check_model(model)
                model_errors[model] = None
            except ApiError as exc:
                model_errors[model] = exc
        model_error = model_errors[model]
        if model_error is not None:
            v.error(_api_error(model_error, ln.number))
            continue
        if v.model and model != v.model:
            v.error(
                BatchLineError(
                    "mismatched_model",
                    f"All requests of a batch must use the same model ('{v.model}' before).",
                    ln.number,
                    "body.model",
                )
            )
            continue
        v.model = model
        v.items.append(ItemRef(ln.number, custom_id, ln.offset, ln.length))
    if not v.items and not v.error_count:
        v.error(BatchLineError("empty_file", "The input file contains no requests."))
    return v
