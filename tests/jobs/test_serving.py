"""The access point's own predictor for ``ft:`` models: same answers as scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from verbund.errors import BadRequest
from verbund.jobs import FineTunedModel, LinearModel, Predictors, load_linear

TINY = {
    "format": "verbund-linear-v1",
    "classes": [0, 1],
    "coef": [[-1.0, 0.0], [1.0, 0.0]],
    "intercept": [0.0, 0.0],
    "mean": [0.0, 0.0],
    "scale": [1.0, 1.0],
}


def registered(tmp_path: Path, model: dict[str, Any]) -> FineTunedModel:
    (tmp_path / "model.json").write_text(json.dumps(model))
    return FineTunedModel("ft:x:uni-a:y", "uni-a", "ftjob-1", "x", "r", tmp_path, 0.0, True)


def test_matches_scikit_learn(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy", reason="numpy comes with scikit-learn (demo extra)")
    sklearn_datasets = pytest.importorskip(
        "sklearn.datasets", reason="scikit-learn comes with the demo extra"
    )
    from sklearn.linear_model import SGDClassifier

    x, y = sklearn_datasets.load_digits(return_X_y=True)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    clf = SGDClassifier(loss="log_loss", random_state=0).fit((x - mean) / scale, y)
    lm = load_linear(
        {
            "format": "verbund-linear-v1",
            "classes": clf.classes_.tolist(),
            "coef": clf.coef_.tolist(),
            "intercept": clf.intercept_.tolist(),
            "mean": mean.tolist(),
            "scale": scale.tolist(),
        }
    )
    rows = x[:200].tolist()
    assert lm.predict(rows) == clf.predict((x[:200] - mean) / scale).tolist()
    ours = np.asarray(lm.predict_proba(rows))
    theirs = clf.predict_proba((x[:200] - mean) / scale)
    assert np.allclose(ours, theirs, atol=1e-9)


def test_binary_models_store_two_rows() -> None:
    lm = LinearModel(["no", "yes"], [[-2.0], [2.0]], [-0.5, 0.5], [0.0], [1.0])
    assert lm.predict([[1.0], [-1.0]]) == ["yes", "no"]


async def test_infer_shapes_and_errors(tmp_path: Path) -> None:
    model = registered(tmp_path, TINY)
    p = Predictors()
    body = {
        "id": "r1",
        "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[3, 0], [-3, 0]]}],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }
    out = await p.infer(model, body)
    assert out["id"] == "r1" and out["model_name"] == "ft:x:uni-a:y"
    assert out["outputs"][0]["data"] == [1, 0]
    assert out["outputs"][1]["shape"] == [2, 2]
    single = await p.infer(
        model, {"inputs": [{"name": "x", "shape": [2], "datatype": "INT64", "data": [1, 0]}]}
    )
    assert single["outputs"][0] == {
        "name": "predict",
        "shape": [1],
        "datatype": "INT64",
        "data": [1],
    }
    bad: list[dict[str, Any]] = [
        {},
        {"inputs": [{"shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
        {"inputs": [{"shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]},
        {"inputs": [{"shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]},
        {"inputs": [{"shape": [1, 2], "datatype": "FP32", "data": [1, True]}]},
        {"inputs": [{"shape": [1, 2], "datatype": "FP32", "data": [1, 2]}], "outputs": [{}]},
    ]
    for b in bad:
        with pytest.raises(BadRequest):
            await p.infer(model, b)


def test_load_refuses_what_it_cannot_serve() -> None:
    with pytest.raises(ValueError, match="unknown model format"):
        load_linear({**TINY, "format": "pickle"})
    with pytest.raises(ValueError, match="do not match"):
        load_linear({**TINY, "coef": [[1.0, 0.0]]})


async def test_repeated_outputs_are_computed_and_returned_once(tmp_path: Path) -> None:
    """A 118 KB request listing its outputs thousands of times made a 14 MB answer."""
    model = registered(tmp_path, TINY)
    body = {
        "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[3, 0], [-3, 0]]}],
        "outputs": [{"name": "predict_proba"}, {"name": "predict"}] * 5000,
    }
    out = await Predictors().infer(model, body)
    assert [o["name"] for o in out["outputs"]] == ["predict_proba", "predict"]


async def test_an_answer_beyond_the_bound_is_refused_before_any_work(tmp_path: Path) -> None:
    from verbund.jobs._serving import MAX_ANSWER_VALUES, MAX_ROWS

    classes = MAX_ANSWER_VALUES // MAX_ROWS + 1  # probabilities for every row are too many
    wide = {
        "format": "verbund-linear-v1",
        "classes": list(range(classes)),
        "coef": [[float(i)] for i in range(classes)],
        "intercept": [0.0] * classes,
        "mean": [0.0],
        "scale": [1.0],
    }
    model = registered(tmp_path, wide)
    rows = {"name": "x", "shape": [MAX_ROWS, 1], "datatype": "FP64", "data": [0.5] * MAX_ROWS}
    p = Predictors()
    with pytest.raises(BadRequest) as err:
        await p.infer(model, {"inputs": [rows], "outputs": [{"name": "predict_proba"}]})
    assert err.value.code == "answer_too_large" and str(MAX_ANSWER_VALUES) in err.value.message
    labels = await p.infer(model, {"inputs": [rows], "outputs": [{"name": "predict"}]})
    assert len(labels["outputs"][0]["data"]) == MAX_ROWS


async def test_deeply_nested_data_is_read_without_recursion(tmp_path: Path) -> None:
    model = registered(tmp_path, TINY)
    data: Any = [1.0, 0.0]
    for _ in range(5000):
        data = [data]
    body = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": data}]}
    out = await Predictors().infer(model, body)  # nesting says nothing of the shape
    assert out["outputs"][0]["data"] == [1]
