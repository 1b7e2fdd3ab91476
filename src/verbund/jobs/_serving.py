"""Serving fine-tuned models at the site that trained them: OIP v2 inference for ``ft:``
models, in the site agent (the access point relays requests to it).

The artifact is ``model.json`` (format ``verbund-linear-v1``): plain weights, no pickle,
so loading what a site sent runs no code. Prediction is pure Python in a worker thread;
loaded models are cached (a few, least recently used first out).

What a request may ask for is bounded before any work: each output at most once (a
repeated name would recompute and repeat the whole result) and an answer of at most
``MAX_ANSWER_VALUES`` numbers, so a small request cannot make a large answer.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from verbund.errors import BadRequest, NotFound
from verbund.jobs._models import FineTunedModel

MAX_ROWS = 10_000
MAX_ANSWER_VALUES = 200_000
CACHE_SIZE = 16
_NUMERIC = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16"}
_NUMERIC |= {"UINT32", "UINT64"}


@dataclass(frozen=True, slots=True)
class LinearModel:
    classes: list[Any]
    coef: list[list[float]]
    intercept: list[float]
    mean: list[float]
    scale: list[float]

    @property
    def n_features(self) -> int:
        return len(self.mean)

    def scores(self, x: list[float]) -> list[float]:
        z = [(v - m) / s for v, m, s in zip(x, self.mean, self.scale, strict=True)]
        return [
            sum(w * v for w, v in zip(row, z, strict=True)) + b
            for row, b in zip(self.coef, self.intercept, strict=True)
        ]

    def predict(self, rows: list[list[float]]) -> list[Any]:
        out = []
        for x in rows:
            s = self.scores(x)
            out.append(self.classes[max(range(len(s)), key=s.__getitem__)])
        return out

    def predict_proba(self, rows: list[list[float]]) -> list[list[float]]:
        """One-vs-rest probabilities, normalised (as scikit-learn's SGDClassifier)."""
        out = []
        for x in rows:
            p = [1.0 / (1.0 + math.exp(-max(-500.0, min(500.0, s)))) for s in self.scores(x)]
            total = sum(p) or 1.0
            out.append([v / total for v in p])
        return out


def load_linear(data: dict[str, Any]) -> LinearModel:
    if data.get("format") != "verbund-linear-v1":
        raise ValueError(f"unknown model format {data.get('format')!r}")
    model = LinearModel(
        classes=list(data["classes"]),
        coef=[[float(v) for v in row] for row in data["coef"]],
        intercept=[float(v) for v in data["intercept"]],
        mean=[float(v) for v in data["mean"]],
        scale=[float(v) or 1.0 for v in data["scale"]],
    )
    k, n = len(model.classes), model.n_features
    if len(model.coef) != k or len(model.intercept) != k or any(len(r) != n for r in model.coef):
        raise ValueError("model.json: weights do not match classes and features")
    return model


class Predictors:
    """Loads and caches the models of registered ``ft:`` names and runs inference."""

    def __init__(self) -> None:
        self._cache: OrderedDict[str, LinearModel] = OrderedDict()

    async def _load(self, model: FineTunedModel) -> LinearModel:
        cached = self._cache.get(model.name)
        if cached is not None:
            self._cache.move_to_end(model.name)
            return cached

        path = model.path

        def read() -> LinearModel:
            if path is None:
                raise OSError("the model's artefacts are at its site")
            return load_linear(json.loads((path / "model.json").read_text()))

        try:
            loaded = await asyncio.to_thread(read)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NotFound(
                f"The model '{model.name}' has no servable artifact.", code="model_not_found"
            ) from exc
        self._cache[model.name] = loaded
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return loaded

    async def metadata(self, model: FineTunedModel) -> dict[str, Any]:
        lm = await self._load(model)
        return {
            "name": model.name,
            "versions": ["1"],
            "platform": "verbund-linear",
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, lm.n_features]}],
            "outputs": [
                {"name": "predict", "datatype": _label_type(lm.classes), "shape": [-1]},
                {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(lm.classes)]},
            ],
        }

    async def infer(self, model: FineTunedModel, body: dict[str, Any]) -> dict[str, Any]:
        lm = await self._load(model)
        rows = _rows(body, lm.n_features)
        wanted = _wanted_outputs(body)
        values = sum(len(rows) * (len(lm.classes) if w == "predict_proba" else 1) for w in wanted)
        if values > MAX_ANSWER_VALUES:
            raise BadRequest(
                f"The answer would hold {values} values; at most {MAX_ANSWER_VALUES} per "
                "request: send fewer rows.",
                code="answer_too_large",
                param="inputs",
            )
        outputs: list[dict[str, Any]] = []

        def run() -> None:
            for name in wanted:
                if name == "predict":
                    labels = lm.predict(rows)
                    outputs.append(
                        {
                            "name": "predict",
                            "shape": [len(rows)],
                            "datatype": _label_type(lm.classes),
                            "data": labels
                            if _label_type(lm.classes) == "INT64"
                            else list(map(str, labels)),
                        }
                    )
                else:
                    proba = lm.predict_proba(rows)
                    outputs.append(
                        {
                            "name": "predict_proba",
                            "shape": [len(rows), len(lm.classes)],
                            "datatype": "FP64",
                            "data": [v for row in proba for v in row],
                        }
                    )

        await asyncio.to_thread(run)
        answer: dict[str, Any] = {
            "model_name": model.name,
            "model_version": "1",
            "outputs": outputs,
        }
        if isinstance(body.get("id"), str):
            answer["id"] = body["id"]
        return answer


def _label_type(classes: list[Any]) -> str:
    return (
        "INT64" if all(isinstance(c, int) and not isinstance(c, bool) for c in classes) else "BYTES"
    )


def _flatten(data: Any) -> list[Any]:
    """The leaves of nested lists in order, without recursion (nesting is the client's)."""
    out: list[Any] = []
    stack: list[Any] = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _rows(body: dict[str, Any], width: int) -> list[list[float]]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest("'inputs' must be a list with one tensor.", param="inputs")
    tensor = inputs[0]
    shape, datatype = tensor.get("shape"), tensor.get("datatype")
    if datatype not in _NUMERIC:
        raise BadRequest(f"inputs[0].datatype must be numeric, not {datatype!r}.", param="inputs")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        raise BadRequest("inputs[0].shape must be [rows, features] or [features].", param="inputs")
    n, f = (1, shape[0]) if len(shape) == 1 else (shape[0], shape[1])
    if f != width:
        raise BadRequest(f"The model takes {width} features per row, not {f}.", param="inputs")
    if n > MAX_ROWS:
        raise BadRequest(f"At most {MAX_ROWS} rows per request.", param="inputs")
    flat = _flatten(tensor.get("data"))
    if len(flat) != n * f:
        raise BadRequest(
            f"inputs[0].data has {len(flat)} values; shape says {n * f}.", param="inputs"
        )
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        raise BadRequest("inputs[0].data must hold numbers.", param="inputs")
    return [[float(v) for v in flat[i * f : (i + 1) * f]] for i in range(n)]


def _wanted_outputs(body: dict[str, Any]) -> list[str]:
    requested = body.get("outputs")
    if requested is None:
        return ["predict"]
    if not isinstance(requested, list) or not requested:
        raise BadRequest("'outputs' must be a non-empty list.", param="outputs")
    names: list[str] = []
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in ("predict", "predict_proba"):
            raise BadRequest(
                "outputs: known names are 'predict' and 'predict_proba'.", param="outputs"
            )
        if name not in names:  # each output once, however often it is asked for
            names.append(name)
    return names
