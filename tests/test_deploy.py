"""The shipped proxy examples agree with the access point's own bounds."""

from __future__ import annotations

import re

from harness.processes import ROOT
from verbund.config import FilesConfig, GatewayConfig, LimitsConfig


def _nginx(directive: str) -> str:
    text = (ROOT / "deploy/nginx/verbund.conf").read_text()
    found = re.search(rf"^\s*{directive}\s+([^;]+);", text, re.M)
    assert found, directive
    return found.group(1)


def test_nginx_takes_every_body_the_access_point_takes() -> None:
    size = _nginx("client_max_body_size")
    assert size.endswith("m")
    limit = int(size[:-1]) * 1024 * 1024
    assert limit >= FilesConfig().max_upload_bytes >= LimitsConfig().max_body_bytes


def test_nginx_and_haproxy_time_out_slow_request_heads_like_the_access_point() -> None:
    assert _nginx("client_header_timeout") == f"{GatewayConfig().header_timeout:g}s"
    haproxy = (ROOT / "deploy/haproxy/haproxy.cfg").read_text()
    found = re.search(r"^\s*timeout http-request\s+(\d+)s", haproxy, re.M)
    assert found and float(found.group(1)) == GatewayConfig().header_timeout
