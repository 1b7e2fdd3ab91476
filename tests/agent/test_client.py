"""The access point's client of an agent: its config, and failures mapped to the tree."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from harness.ports import free_port
from tests.conftest import federation_dict
from verbund.config import parse_config
from verbund.errors import ConfigError, NotFound, SiteAgentUnavailable
from verbund.federation import AgentClient, agent_error


def _with_agent(tmp_path: Path, **site: object) -> dict[str, object]:
    data = federation_dict(tmp_path)
    data["sites"][0].update(site)  # type: ignore[index]
    return data


def test_a_site_names_its_agent_besides_its_backends(tmp_path: Path) -> None:
    cfg = parse_config(
        _with_agent(tmp_path, agent_url="http://127.0.0.1:9100/", agent_key_env="WEST_AGENT_KEY")
    )
    west = cfg.site("west")
    assert west is not None and west.agent_url == "http://127.0.0.1:9100"
    assert west.backends and west.ingress == "direct"


@pytest.mark.parametrize(
    ("site", "problem"),
    [
        ({"agent_url": "http://127.0.0.1:1"}, "agent_key_env"),
        ({"ingress": "agent"}, "need agent_url"),
        ({"agent_url": "ftp://x", "agent_key_env": "K"}, "http"),
    ],
)
def test_incomplete_agent_settings_are_refused(
    tmp_path: Path, site: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config(_with_agent(tmp_path, **site))


def test_the_credential_comes_from_the_environment(tmp_path: Path) -> None:
    cfg = parse_config(_with_agent(tmp_path, agent_url="http://h:1", agent_key_env="WEST_KEY"))
    west = cfg.site("west")
    assert west is not None
    with pytest.raises(ConfigError, match=r"\$WEST_KEY is not set"):
        AgentClient.for_site(west, env={})


async def test_an_unreachable_agent_is_unavailable() -> None:
    client = AgentClient("west", f"http://127.0.0.1:{free_port()}", "k" * 20, connect_timeout=0.5)
    try:
        with pytest.raises(SiteAgentUnavailable, match="unreachable") as err:
            await client.healthz()
        assert err.value.status == 503
    finally:
        await client.aclose()


async def test_a_hanging_agent_times_out() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client = AgentClient("west", "http://agent", "k" * 20, transport=httpx.MockTransport(hang))
    try:
        with pytest.raises(SiteAgentUnavailable, match="timed out"):
            await client.healthz()
    finally:
        await client.aclose()


def test_agent_error_answers_become_the_trees_errors() -> None:
    body = b'{"error": {"message": "no job j1", "type": "x", "code": "not_found", "param": "id"}}'
    err = agent_error("west", 404, body)
    assert isinstance(err, NotFound) and err.message == "no job j1" and err.param == "id"
    assert agent_error("west", 500, b"<html>").status == 502  # nothing of the body leaks
    assert "html" not in agent_error("west", 500, b"<html>").message
