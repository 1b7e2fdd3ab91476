"""Checking an Open Inference Protocol v2 inference request before any backend sees it.

An OIP request is ``{"id"?, "parameters"?, "inputs": [tensor, ...], "outputs"?}`` where a
tensor is ``{"name", "shape", "datatype", "parameters"?, "data"}``. The check is what a
model server would otherwise answer with an error of its own (or, for MLServer, a 500
that would count against a healthy backend): a missing field, a datatype the protocol
does not have, data of the wrong type, or data whose element count differs from its shape.
"""

from __future__ import annotations

import math
from typing import Any

from verbund.errors import BadRequest

__all__ = ["DATATYPES", "check_infer_request"]

_NUMERIC = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64", "BF16"}
)
DATATYPES = _NUMERIC | {"BOOL", "BYTES"}
MAX_TENSORS = 1024


def _bad(message: str, param: str) -> BadRequest:
    return BadRequest(message, code="invalid_inference_request", param=param)


def _leaf_ok(datatype: str, value: object) -> bool:
    if datatype == "BOOL":
        return isinstance(value, bool)
    if datatype == "BYTES":
        return isinstance(value, str)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count_elements(data: object, datatype: str, where: str) -> int:
    """Elements of a (possibly nested) array, checking each has the datatype's JSON type."""
    if not isinstance(data, list):
        data = [data]  # a scalar tensor may send its one element bare
    count = 0
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif _leaf_ok(datatype, item):
            count += 1
        else:
            kind = {"BOOL": "booleans", "BYTES": "strings"}.get(datatype, "numbers")
            raise _bad(f"'{where}.data' must hold {kind} for datatype {datatype}.", where)
    return count


def _check_tensor(tensor: object, where: str) -> None:
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
    if "data" not in tensor:
        raise _bad(f"'{where}.data' is missing.", f"{where}.data")
    count = _count_elements(tensor["data"], datatype, where)
    want = math.prod(shape)
    if count != want:
        raise _bad(
            f"'{where}.data' has {count} elements but shape {shape} needs {want}.",
            f"{where}.data",
        )


def check_infer_request(body: dict[str, Any]) -> None:
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
    for i, tensor in enumerate(inputs):
        _check_tensor(tensor, f"inputs[{i}]")
        if tensor["name"] in names:
            raise _bad(f"Input name '{tensor['name']}' appears twice.", f"inputs[{i}].name")
        names.add(tensor["name"])
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
