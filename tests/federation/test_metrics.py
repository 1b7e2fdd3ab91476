from __future__ import annotations

import pytest

from verbund.federation import parse_engine_metrics

VLLM = """# HELP vllm:num_requests_running Number of requests running
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.75
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (VLLM, (3.0, 2.0, 0.75)),
        (VLLM.replace("kv_cache_usage_perc", "gpu_cache_usage_perc"), (3.0, 2.0, 0.75)),
        (
            "sglang:num_running_reqs 4\nsglang:num_queue_reqs 1\nsglang:token_usage 0.5\n",
            (4.0, 1.0, 0.5),
        ),
        (
            'vllm:num_requests_running{model_name="a"} 1\n'
            'vllm:num_requests_running{model_name="b"} 2\n',
            (3.0, 0.0, 0.0),
        ),
    ],
)
def test_engine_metric_names(text: str, expected: tuple[float, float, float]) -> None:
    load = parse_engine_metrics(text, now=5.0)
    assert load is not None
    assert (load.running, load.waiting, load.cache_usage) == expected
    assert load.scraped_at == 5.0


def test_unknown_or_broken_metrics_are_ignored() -> None:
    assert parse_engine_metrics("process_cpu_seconds_total 12\n", 1.0) is None
    assert parse_engine_metrics("this is { not prometheus", 1.0) is None
