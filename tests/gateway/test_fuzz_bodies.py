"""Fuzzing the request readers: whatever a client sends to /v1 and /v2, the answer is a
4xx in the route's error shape or a success, never a 5xx, and memory stays bounded.

Hypothesis drives an in-process access point with fake backends. Bodies are arbitrary
JSON, valid requests with fields replaced by arbitrary values, deeply nested values and
raw bytes. Example counts and the per-example deadline are bounded; the example database
is off so runs do not depend on earlier ones.
"""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import MODEL, Gateway, GatewayFactory
from tests.gateway.test_oip_routes import DIGITS, fakes_for, oip_config
from tests.jobs.test_serving import TINY, registered
from verbund.errors import BadRequest, NotFound
from verbund.jobs import Predictors

FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_RSS_GROWTH_MB = 256

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=40,
)


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    """A value nested up to 1500 levels, as text (the reader must bound it, not recurse)."""
    depth = draw(st.integers(min_value=1, max_value=1500))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    return opener * depth + b"1" + closer * depth


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


PLAIN: st.SearchStrategy[dict[str, Any]] = st.just({})


def variants(
    base: dict[str, Any], fields: list[str], extra: st.SearchStrategy[dict[str, Any]] = PLAIN
) -> st.SearchStrategy[bytes]:
    """``base`` with some fields set to arbitrary values, or with a nested value added
    (``extra``: fields that change the route's path, e.g. streaming re-encodes the body)."""
    replaced = st.dictionaries(st.sampled_from(fields), json_values, max_size=4).map(
        lambda over: encode({**base, **over})
    )
    deep = st.tuples(extra, st.sampled_from(fields), nested()).map(
        lambda efv: encode({**base, **efv[0]})[:-1] + b', "%s": ' % efv[1].encode() + efv[2] + b"}"
    )
    return replaced | deep | json_values.map(encode) | st.binary(max_size=200) | nested()


STREAMED = st.sampled_from([{}, {"stream": True}])
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hallo"}]}
CHAT_FIELDS = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "temperature",
    "top_p",
    "stream",
    "stream_options",
    "user",
    "tools",
    "response_format",
    "x",
]
COMPLETION = {"model": MODEL, "prompt": "Hallo"}
EMBEDDING = {"model": "emb", "input": "Hallo"}
OIP = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]}]}
OIP_FIELDS = ["inputs", "outputs", "id", "parameters", "x"]


def drive(gateway: Callable[[], Any]) -> Iterator[tuple[asyncio.Runner, Gateway]]:
    """An access point on a loop of its own, so Hypothesis's synchronous examples can
    call it one after another."""
    with asyncio.Runner() as runner:
        cm = gateway()
        gw = runner.run(cm.__aenter__())
        try:
            yield runner, gw
        finally:
            runner.run(cm.__aexit__(None, None, None))


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def v1(gateway_factory: GatewayFactory) -> Iterator[tuple[asyncio.Runner, Gateway]]:
    yield from drive(gateway_factory)


@pytest.fixture
def v2(gateway_factory: GatewayFactory, tmp_path: Path) -> Iterator[tuple[asyncio.Runner, Gateway]]:
    cfg = oip_config(tmp_path)
    yield from drive(lambda: gateway_factory(cfg, fakes_for(cfg)))


def check_openai_answer(status: int, body: bytes) -> None:
    assert status < 500, body[:500]
    if status >= 400:
        err = json.loads(body)["error"]
        assert set(err) == {"message", "type", "code", "param"} and err["message"]


@pytest.mark.parametrize(
    ("path", "base", "fields", "extra"),
    [
        ("/v1/chat/completions", CHAT, CHAT_FIELDS, STREAMED),
        (
            "/v1/completions",
            COMPLETION,
            ["model", "prompt", "max_tokens", "n", "stream", "x"],
            STREAMED,
        ),
        ("/v1/embeddings", EMBEDDING, ["model", "input", "user", "x"], PLAIN),
        (
            "/v1/batches",
            {
                "input_file_id": "file-x",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
            ["input_file_id", "endpoint", "metadata"],
            PLAIN,
        ),
    ],
)
def test_v1_bodies_never_get_a_5xx(
    v1: tuple[asyncio.Runner, Gateway],
    path: str,
    base: dict[str, Any],
    fields: list[str],
    extra: st.SearchStrategy[dict[str, Any]],
) -> None:
    runner, gw = v1
    before = max_rss_mb()

    @FUZZ
    @given(body=variants(base, fields, extra))
    def check(body: bytes) -> None:
        headers = {**gw.auth(), "content-type": "application/json"}
        resp = runner.run(gw.client.post(path, content=body, headers=headers))
        check_openai_answer(resp.status_code, resp.content)

    check()
    assert max_rss_mb() - before < MAX_RSS_GROWTH_MB


def test_v2_bodies_never_get_a_5xx(v2: tuple[asyncio.Runner, Gateway]) -> None:
    runner, gw = v2
    before = max_rss_mb()

    @FUZZ
    @given(body=variants(OIP, OIP_FIELDS))
    def check(body: bytes) -> None:
        resp = runner.run(
            gw.client.post(f"/v2/models/{DIGITS}/infer", content=body, headers=gw.auth())
        )
        assert resp.status_code < 500, resp.text[:500]
        if resp.status_code >= 400:
            assert isinstance(resp.json()["error"], str)

    check()
    assert max_rss_mb() - before < MAX_RSS_GROWTH_MB


def deep_list(depth: int) -> Any:
    value: Any = [1.0, 0.0]
    for _ in range(depth):
        value = [value]
    return value


def test_ft_inference_takes_any_body_without_a_crash(tmp_path: Path) -> None:
    """The access point's own predictor reads ``ft:`` requests: a 400 or an answer."""
    model = registered(tmp_path, TINY)
    predictors = Predictors()
    deep_rows = st.integers(min_value=0, max_value=1000).map(deep_list)
    outputs = st.lists(
        st.fixed_dictionaries({"name": st.sampled_from(["predict", "predict_proba", "x"])}),
        max_size=50,
    )
    # well-formed requests with arbitrary nesting and outputs, then anything at all
    valid = st.fixed_dictionaries(
        {
            "inputs": st.tuples(
                st.fixed_dictionaries(
                    {
                        "name": st.just("x"),
                        "shape": st.sampled_from([[2], [1, 2]]),
                        "datatype": st.sampled_from(["FP64", "INT64"]),
                        "data": deep_rows,
                    }
                )
            ).map(list)
        },
        optional={"outputs": outputs},
    )
    tensor = st.fixed_dictionaries(
        {
            "name": st.just("x"),
            "shape": st.lists(st.integers(min_value=-1, max_value=3), max_size=3),
            "datatype": st.sampled_from(["FP64", "INT8", "BYTES", "BOOL", "nope"]),
            "data": json_values | deep_rows,
        }
    )
    anything = st.fixed_dictionaries(
        {"inputs": st.lists(tensor, max_size=2) | json_values},
        optional={"outputs": outputs | json_values, "id": json_values},
    )
    bodies = valid | anything

    @FUZZ
    @given(body=bodies)
    def check(body: dict[str, Any]) -> None:
        try:
            answer = asyncio.run(predictors.infer(model, body))
        except (BadRequest, NotFound):
            return
        assert len(answer["outputs"]) <= 2

    check()
