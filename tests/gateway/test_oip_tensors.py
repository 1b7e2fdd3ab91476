"""OIP requests against the model's declared tensors, the binary tensor extension, the
request size limit per model, and the model card in the catalogue and the metadata."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GatewayFactory, federation_dict
from tests.gateway.test_oip_routes import DIGITS, INFER, assert_oip_error, fakes_for, oip_calls
from verbund.config import FederationConfig, parse_config
from verbund.errors import BadRequest
from verbund.gateway._catalogue import model_card
from verbund.gateway._oip_body import check_against_model, check_infer_request, parse_infer_body

IMAGES = {"name": "images", "datatype": "FP32", "shape": [-1, 1, 8, 8]}


def digits_config(tmp_path: Path, **model: Any) -> FederationConfig:
    data = federation_dict(tmp_path)
    for site in data["sites"][:2]:
        site["backends"].append(
            {
                "name": f"{site['name']}-oip",
                "kind": "oip",
                "url": f"http://{site['name']}-oip.invalid:8080",
                "models": [DIGITS],
            }
        )
    data["models"].append(
        {
            "name": DIGITS,
            "kind": "oip",
            "license": "CC-BY-4.0",
            "framework": "pytorch",
            "inputs": [IMAGES],
            "outputs": [{"name": "digit", "datatype": "INT64", "shape": [-1]}],
            "max_batch": 16,
            "card": {"training_data": "load_digits", "intended_use": "tests"},
            **model,
        }
    )
    data["models"].append({"name": "tuned", "kind": "oip", "base_model": DIGITS})
    return parse_config(data)


def images(n: int, shape: list[int] | None = None, datatype: str = "FP32") -> dict[str, Any]:
    tensor = {"name": "images", "datatype": datatype, "shape": shape or [n, 1, 8, 8]}
    return {"inputs": [{**tensor, "data": [0.5] * (n * 64)}]}


def binary(n: int, *, extra: int = 0, datatype: str = "FP32") -> tuple[bytes, dict[str, str]]:
    raw = struct.pack(f"<{n * 64}f", *([1.0] * (n * 64)))
    tensor = {"name": "images", "datatype": datatype, "shape": [n, 1, 8, 8]}
    head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}]})
    body = head.encode() + raw + b"\0" * extra
    return body, {"inference-header-content-length": str(len(head))}


def model_of(cfg: FederationConfig) -> Any:
    m = cfg.model(DIGITS)
    assert m is not None
    return m


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (images(2, [2, 64]), "inputs[0].shape", "must have shape [-1, 1, 8, 8]"),
        (images(2, [2, 8, 8, 1]), "inputs[0].shape", "not [2, 8, 8, 1]"),
        (images(2, datatype="FP64"), "inputs[0].datatype", "must have datatype FP32"),
        (images(17), "inputs[0].shape", "at most 16"),
    ],
)
def test_tensors_are_checked_against_the_declared_inputs(
    tmp_path: Path, body: dict[str, Any], param: str, words: str
) -> None:
    model = model_of(digits_config(tmp_path))
    check_infer_request(body)  # well-formed as such
    with pytest.raises(BadRequest) as err:
        check_against_model(body, model)
    assert err.value.param == param
    assert "'images'" in err.value.message and words in err.value.message
    check_against_model(images(16), model)  # the largest batch allowed


def test_unknown_and_missing_inputs_are_named(tmp_path: Path) -> None:
    model = model_of(digits_config(tmp_path))
    renamed = images(1)
    renamed["inputs"][0]["name"] = "pixels"
    with pytest.raises(BadRequest, match="no input 'pixels'; its inputs: images"):
        check_against_model(renamed, model)
    two = model_of(digits_config(tmp_path, inputs=[IMAGES, {**IMAGES, "name": "mask"}]))
    with pytest.raises(BadRequest, match="needs the input 'mask'"):
        check_against_model(images(1), two)
    free = model_of(digits_config(tmp_path, inputs=[], max_batch=0))
    check_against_model(images(1000, [1000, 3]), free)  # nothing declared: nothing checked


def test_binary_tensor_sizes_must_add_up() -> None:
    body, headers = binary(3)
    header, follows = parse_infer_body(body, headers["inference-header-content-length"], 64)
    check_infer_request(header, follows)
    assert follows == 3 * 64 * 4
    with pytest.raises(BadRequest, match="follow the JSON header"):
        check_infer_request(header, follows + 1)
    header["inputs"][0]["parameters"]["binary_data_size"] = 100
    with pytest.raises(BadRequest, match="needs 768"):
        check_infer_request(header, 100)
    with pytest.raises(BadRequest, match="byte count within the body"):
        parse_infer_body(body, str(len(body) + 1), 64)
    with pytest.raises(BadRequest, match="byte count"):
        parse_infer_body(body, "-5", 64)


async def test_wrong_tensors_never_reach_a_backend(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = digits_config(tmp_path)
    async with gateway_factory(cfg, fakes_for(cfg)) as g:
        for body in (images(2, [2, 64]), images(2, datatype="FP64"), images(17)):
            resp = await g.client.post(INFER, json=body, headers=g.auth())
            assert "'images'" in assert_oip_error(resp, 400)
        raw, headers = binary(17)
        resp = await g.client.post(INFER, content=raw, headers={**g.auth(), **headers})
        assert "at most 16" in assert_oip_error(resp, 400)
        raw, headers = binary(2, extra=3)
        resp = await g.client.post(INFER, content=raw, headers={**g.auth(), **headers})
        assert "binary_data_size" in assert_oip_error(resp, 400)
        assert oip_calls(g) == []


async def test_binary_tensors_pass_through_unchanged(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = digits_config(tmp_path)
    async with gateway_factory(cfg, fakes_for(cfg)) as g:
        raw, headers = binary(4)
        resp = await g.client.post(INFER, content=raw, headers={**g.auth(), **headers})
        assert resp.status_code == 200, resp.text
        call = oip_calls(g)[0]
        split = int(headers["inference-header-content-length"])
        assert call["binary"] == raw[split:] and call["body"]["inputs"][0]["shape"][0] == 4
        assert call["headers"]["content-type"] == "application/octet-stream"
        assert call["headers"]["inference-header-content-length"] == str(split)
        # the answer's binary part comes back with its header length
        answer_split = int(resp.headers["inference-header-content-length"])
        assert resp.content[answer_split:] == raw[split:]
        assert resp.headers["content-type"] == "application/octet-stream"


async def test_request_size_limit_per_model(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = digits_config(tmp_path, max_request_bytes=2048, max_batch=0)
    async with gateway_factory(cfg, fakes_for(cfg)) as g:
        small = await g.client.post(INFER, json=images(1), headers=g.auth())
        assert small.status_code == 200, small.text
        big = await g.client.post(INFER, json=images(20), headers=g.auth())  # over 2 KiB
        assert "2048 bytes" in assert_oip_error(big, 413)
        assert len(oip_calls(g)) == 1


async def test_model_card_in_the_catalogue_and_the_metadata(
    gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    cfg = digits_config(tmp_path)
    async with gateway_factory(cfg, fakes_for(cfg)) as g:
        listed = await g.client.get("/v1/models", headers=g.auth())
        entries = {m["id"]: m["verbund"] for m in listed.json()["data"]}
        card = entries[DIGITS]["card"]
        assert entries[DIGITS]["license"] == card["license"] == "CC-BY-4.0"
        assert entries[DIGITS]["framework"] == card["framework"] == "pytorch"
        assert card["inputs"] == [IMAGES] and card["max_batch"] == 16
        assert card["training_data"] == "load_digits" and card["restrictions"] is None
        meta = await g.client.get(f"/v2/models/{DIGITS}", headers=g.auth())
        assert meta.status_code == 200 and meta.json()["verbund"] == card
        assert meta.json()["inputs"][0]["name"] == "x"  # the model server's own answer
    tuned = cfg.model("tuned")
    assert tuned is not None and tuned.license == ""
    inherited = model_card(tuned, {m.name: m for m in cfg.models})
    assert inherited["license"] == "CC-BY-4.0" and inherited["base_model"] == DIGITS
