"""Checking an Open Inference Protocol v2 inference request before any backend sees it.

An OIP request is ``{"id"?, "parameters"?, "inputs": [tensor, ...], "outputs"?}`` where a
tensor is ``{"name", "shape", "datatype", "parameters"?, "data"}``. The check is what a
model server would otherwise answer with an error of its own (or, for MLServer, a 500
that would count against a healthy backend): a missing field, a datatype the protocol
does not have, data of the wrong type, or data whose element count differs from its shape.

The binary tensor extension: the body is a JSON header of ``Inference-Header-Content-Length``
bytes followed by the tensors' raw bytes; such a tensor has ``parameters.binary_data_size``
instead of ``data``. Only the header is parsed; the sizes must add up to the bytes that
follow, and the whole body goes to the model server unchanged.

Where the catalogue declares a model's inputs (``[[models]] inputs``), the request must
match them: each input a declared name, its datatype, and a shape that fits the declared
one (``-1`` is any size), with at most ``max_batch`` in the first dimension.
"""

from __future__ import annotations

import math
from typing import Any

from verbund.config import ModelConfig
from verbund.errors import BadRequest
from verbund.gateway._body import parse_object

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "check_against_model",
    "check_infer_request",
    "parse_infer_body",
]

HEADER_LENGTH = "inference-header-content-length"

_NUMERIC = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64", "BF16"}
)
DATATYPES = _NUMERIC | {"BOOL", "BYTES"}
MAX_TENSORS = 1024
_ITEM_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2}
_ITEM_BYTES |= {"UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}
_NUMBER_TYPES: frozenset[type] = frozenset({int, float})
_LEAF_TYPES: dict[str, frozenset[type]] = {"BOOL": frozenset({bool}), "BYTES": frozenset({str})}


def _bad(message: str, param: str) -> BadRequest:
    return BadRequest(message, code="invalid_inference_request", param=param)


def _count_elements(data: object, datatype: str, where: str) -> int:
    """Elements of a (possibly nested) array, checking each has the datatype's JSON type.

    Each array's element types are taken at once (``set(map(type, ...))``, in C): a tensor
    of thousands of numbers costs microseconds, not a Python step per number. The values
    come from orjson, so exact types suffice (``bool`` is not a number here)."""
    leaves = _LEAF_TYPES.get(datatype, _NUMBER_TYPES)
    count = 0
    stack: list[list[Any]] = [data if isinstance(data, list) else [data]]  # a bare scalar
    while stack:
        items = stack.pop()
        types = set(map(type, items))
        if types <= leaves:
            count += len(items)
            continue
        if not types <= leaves | {list}:
            kind = {"BOOL": "booleans", "BYTES": "strings"}.get(datatype, "numbers")
            raise _bad(f"'{where}.data' must hold {kind} for datatype {datatype}.", where)
        for item in items:
            if type(item) is list:
                stack.append(item)
            else:
                count += 1
    return count


def _check_tensor(tensor: object, where: str) -> int:
    """Checks one input tensor; returns its binary size (0 for a tensor in JSON)."""
    if not isinstance(tensor, dict):
        raise _bad(f"'{where}' must be an object with name, shape, datatype and data.", where)
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(f"'{where}.name' must be a non-empty string.", f"{where}.name")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _bad(f"'{where}.shape' must be an array of non-negative integers.", f"{where}.shape")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise _bad(
            f"'{where}.datatype' must be one of {', '.join(sorted(DATATYPES))}.",
            f"{where}.datatype",
        )
    params = tensor.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise _bad(f"'{where}.parameters' must be an object.", f"{where}.parameters")
    want = math.prod(shape)
    if params and "binary_data_size" in params:
        return _check_binary(tensor, params["binary_data_size"], want, where)
    if "data" not in tensor:
        raise _bad(f"'{where}.data' is missing.", f"{where}.data")
    count = _count_elements(tensor["data"], datatype, where)
    if count != want:
        raise _bad(
            f"'{where}.data' has {count} elements but shape {shape} needs {want}.",
            f"{where}.data",
        )
    return 0


def _check_binary(tensor: dict[str, Any], size: object, elements: int, where: str) -> int:
    """A tensor of the binary extension: its size fits its shape; returns the size."""
    param = f"{where}.parameters.binary_data_size"
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _bad(f"'{param}' must be a non-negative integer.", param)
    if "data" in tensor:
        raise _bad(f"'{where}' has both 'data' and binary data.", f"{where}.data")
    item = _ITEM_BYTES.get(tensor["datatype"])  # BYTES elements carry their own lengths
    if item is not None and size != elements * item:
        raise _bad(
            f"'{param}' is {size} bytes but shape {tensor['shape']} of "
            f"{tensor['datatype']} needs {elements * item}.",
            param,
        )
    return size


def parse_infer_body(
    raw: bytes, header_length: str | None, max_depth: int
) -> tuple[dict[str, Any], int]:
    """The request's JSON (the header, for the binary extension) and how many binary
    bytes follow it."""
    if header_length is None:
        return parse_object(raw, max_depth), 0
    if not header_length.isdigit() or int(header_length) > len(raw):
        raise BadRequest(
            "Inference-Header-Content-Length must be a byte count within the body.",
            code="invalid_inference_header",
            param="Inference-Header-Content-Length",
        )
    split = int(header_length)
    return parse_object(raw[:split], max_depth), len(raw) - split


def check_infer_request(body: dict[str, Any], binary_bytes: int = 0) -> None:
    inputs = body.get("inputs")
    if inputs is None:
        raise BadRequest(
            "Missing required field: 'inputs'.", code="missing_required_parameter", param="inputs"
        )
    if not isinstance(inputs, list) or not inputs:
        raise _bad("'inputs' must be a non-empty array of tensors.", "inputs")
    if len(inputs) > MAX_TENSORS:
        raise _bad(f"'inputs' has more than {MAX_TENSORS} tensors.", "inputs")
    names = set()
    binary = 0
    for i, tensor in enumerate(inputs):
        binary += _check_tensor(tensor, f"inputs[{i}]")
        if tensor["name"] in names:
            raise _bad(f"Input name '{tensor['name']}' appears twice.", f"inputs[{i}].name")
        names.add(tensor["name"])
    if binary != binary_bytes:
        raise _bad(
            f"The inputs' binary_data_size add up to {binary} bytes but {binary_bytes} "
            "follow the JSON header (Inference-Header-Content-Length).",
            "inputs",
        )
    if "id" in body and not isinstance(body["id"], str):
        raise _bad("'id' must be a string.", "id")
    if body.get("parameters") is not None and not isinstance(body["parameters"], dict):
        raise _bad("'parameters' must be an object.", "parameters")
    outputs = body.get("outputs")
    if outputs is not None and (
        not isinstance(outputs, list)
        or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    ):
        raise _bad("'outputs' must be an array of objects with a string 'name'.", "outputs")


def _fits(shape: list[int], declared: list[int]) -> bool:
    if len(shape) != len(declared):
        return False
    return all(d in (-1, s) for s, d in zip(shape, declared, strict=True))


def check_against_model(body: dict[str, Any], model: ModelConfig) -> None:
    """The checked request's inputs against the model's declared ones (none: no check)."""
    if not model.inputs:
        return
    declared = {t.name: t for t in model.inputs}
    given = set()
    for i, tensor in enumerate(body["inputs"]):
        name, where = tensor["name"], f"inputs[{i}]"
        spec = declared.get(name)
        if spec is None:
            known = ", ".join(declared)
            raise _bad(
                f"The model '{model.name}' has no input '{name}'; its inputs: {known}.",
                f"{where}.name",
            )
        given.add(name)
        if tensor["datatype"] != spec.datatype:
            raise _bad(
                f"Input '{name}' must have datatype {spec.datatype}, not {tensor['datatype']}.",
                f"{where}.datatype",
            )
        shape = tensor["shape"]
        if not _fits(shape, spec.shape):
            raise _bad(
                f"Input '{name}' must have shape {spec.shape} (-1: any size), not {shape}.",
                f"{where}.shape",
            )
        if model.max_batch and shape and shape[0] > model.max_batch:
            raise BadRequest(
                f"Input '{name}' has {shape[0]} items in its first dimension; the model "
                f"'{model.name}' takes at most {model.max_batch} per request.",
                code="tensor_too_large",
                param=f"{where}.shape",
            )
    missing = [n for n in declared if n not in given]
    if missing:
        raise _bad(f"The model '{model.name}' needs the input '{missing[0]}'.", "inputs")
