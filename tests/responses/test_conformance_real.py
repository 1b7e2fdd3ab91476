"""Conformance with OpenAI's API description: schemathesis generates malformed
``POST /v1/responses`` bodies (negative mode) from ``openai-openapi.yaml`` and sends them
to a real access point (one process, a stub model server behind it). Each must get a
4xx in OpenAI's error shape, never a 5xx; a body that happens to be valid may be
answered. The number of examples is bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.core import NotSet

from harness.stub_backend import stub_gateway

pytestmark = pytest.mark.real
# POST /responses of OpenAI's description and what it references (MIT, see spec/LICENSE)
SPEC = Path(__file__).parent / "spec" / "openai-responses.yaml"
EXAMPLES = 100


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with stub_gateway(tmp_path_factory.mktemp("conformance"), "ap-c") as gw:
        yield gw.url, str(gw.create_key("uni-a")["key"])


def test_malformed_responses_requests_get_4xx_in_openais_shape(gateway: tuple[str, str]) -> None:
    url, key = gateway
    schema = schemathesis.openapi.from_dict(yaml.safe_load(SPEC.read_text(encoding="utf-8")))
    operation = schema["/responses"]["POST"]
    strategy = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
    seen: dict[int, int] = {}
    failures: list[str] = []
    client = httpx.Client(base_url=url + "/v1", timeout=30, trust_env=False)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # shrinking these deep bodies takes minutes; none is needed
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        body = None if isinstance(case.body, NotSet) else case.body
        if isinstance(body, bytes):
            resp = client.post("/responses", content=body, headers=headers)
        else:
            resp = client.post("/responses", json=body, headers=headers)
        seen[resp.status_code] = seen.get(resp.status_code, 0) + 1
        if resp.status_code >= 500:
            failures.append(f"{resp.status_code} {resp.text[:300]} for {str(body)[:300]}")
        if resp.status_code >= 400:
            err = resp.json().get("error")
            if not isinstance(err, dict) or set(err) != {"message", "type", "code", "param"}:
                failures.append(f"not OpenAI's error shape: {resp.text[:300]}")

    try:
        check()
    finally:
        client.close()
    print("status codes:", dict(sorted(seen.items())))
    assert not failures, "\n".join(failures[:10])
    assert sum(n for s, n in seen.items() if 400 <= s < 500) > 0
