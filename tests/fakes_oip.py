"""An in-process fake Open Inference Protocol v2 server (MLServer-like) for fast tests.

:class:`FakeOipBackend` is an ``httpx.MockTransport`` handler. It serves the models it is
given, answers an inference with the sum of each input's elements (so tests can check the
data arrived intact), answers errors like MLServer (``{"error": "..."}``), and fails in the
ways a real server fails (``mode``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/infer|/ready)?$")


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out += _flatten(item)
    return out


@dataclass
class FakeOipBackend:
    name: str
    models: tuple[str, ...] = ("digits",)
    versions: tuple[str, ...] = ("v1",)
    mode: str = "ok"  # ok | refuse | timeout | status
    status: int = 503
    error_body: bytes = b'{"error": "model busy at http://10.0.0.7:8080/v2"}'
    calls: list[dict[str, Any]] = field(default_factory=list)
    probes: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path.startswith("/v2/health/"):
            self.probes += 1
            if self.mode == "refuse":
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(200)
        split = request.headers.get("inference-header-content-length")
        head = request.content[: int(split)] if split else request.content
        self.calls.append(
            {
                "method": request.method,
                "path": path,
                "body": json.loads(head) if head else None,
                "headers": dict(request.headers),
                "binary": request.content[int(split) :] if split else b"",
            }
        )
        if self.mode == "refuse":
            raise httpx.ConnectError("refused", request=request)
        if self.mode == "timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if self.mode == "status":
            return httpx.Response(
                self.status, content=self.error_body, headers={"content-type": "application/json"}
            )
        m = _MODEL_PATH.match(path)
        if m is None or m.group(1) not in self.models:
            return httpx.Response(404, json={"error": f"Model {path} not found"})
        model, version, action = m.group(1), m.group(2), m.group(3)
        if version is not None and version not in self.versions:
            return httpx.Response(
                404, json={"error": f"Model {model} with version {version} not found"}
            )
        if action is None and request.method == "GET":
            return httpx.Response(
                200,
                json={
                    "name": model,
                    "versions": list(self.versions),
                    "platform": "fake",
                    "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 2]}],
                    "outputs": [{"name": "sum", "datatype": "FP64", "shape": [-1, 1]}],
                },
            )
        if action == "/infer" and request.method == "POST" and split:
            # binary tensors: echo the raw bytes back as one binary output
            raw = request.content[int(split) :]
            out = {"name": "echo", "shape": [len(raw)], "datatype": "UINT8"}
            out["parameters"] = {"binary_data_size": len(raw)}
            head = json.dumps({"model_name": model, "outputs": [out]}).encode()
            return httpx.Response(
                200, content=head + raw, headers={"inference-header-content-length": str(len(head))}
            )
        if action == "/infer" and request.method == "POST":
            body = json.loads(request.content)
            sums = [
                sum(len(v) if isinstance(v, str) else float(v) for v in _flatten(t["data"]))
                for t in body["inputs"]
            ]
            return httpx.Response(
                200,
                json={
                    "model_name": model,
                    "model_version": version or self.versions[0],
                    "id": body.get("id", "fake-id"),
                    "outputs": [
                        {"name": "sum", "shape": [len(sums), 1], "datatype": "FP64", "data": sums}
                    ],
                },
            )
        return httpx.Response(405, json={"error": "Method Not Allowed"})
