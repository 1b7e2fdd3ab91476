"""Only the access points and the site's operators get in; everyone else gets 401."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agent.conftest import KEYS, InProcessAgent, site_dict
from verbund.agent import AgentServices, Role, parse_site_config
from verbund.errors import ConfigError, SiteAgentError


async def test_the_access_point_credential_is_recognised(agent: InProcessAgent) -> None:
    answer = await agent.client().healthz()
    assert answer["site"] == "west"
    assert answer["caller"] == {"role": "access_point", "name": "ap"}


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer vbsite-ap-west-0123456789abcdeX",  # one character off
        "Bearer vbsite-ap-sued-0123456789abcdef",  # another site's credential
        "Basic dmJzaXRlLWFwLXdlc3Q=",
        "Bearer",
    ],
)
async def test_anything_else_gets_401_in_openai_shape(
    agent: InProcessAgent, header: str | None
) -> None:
    async with agent.http(key=None) as http:
        r = await http.get(
            "/healthz", headers={"authorization": header} if header is not None else {}
        )
    assert r.status_code == 401
    err = r.json()["error"]
    assert set(err) == {"message", "type", "code", "param"}
    assert err["type"] == "authentication_error"


async def test_unknown_paths_are_401_before_404(agent: InProcessAgent) -> None:
    """Without a credential nothing about the agent's routes is revealed."""
    async with agent.http(key=None) as http:
        assert (await http.get("/no/such/route")).status_code == 401
    async with agent.http() as http:
        assert (await http.get("/no/such/route")).status_code == 404


async def test_a_refused_credential_is_the_access_points_problem(agent: InProcessAgent) -> None:
    with pytest.raises(SiteAgentError, match="refused this access point's credential") as err:
        await agent.client(key="vbsite-wrong-0123456789abcdef").healthz()
    assert err.value.status == 502


def test_credentials_come_from_the_environment(tmp_path: Path) -> None:
    cfg = parse_site_config(site_dict(tmp_path))
    creds = AgentServices.build(cfg, KEYS).credentials
    caller = creds.match(KEYS["VERBUND_SITE_OPERATOR_KEY"].encode())
    assert caller is not None and caller.role is Role.operator and caller.name == "op-west"
    assert creds.match(b"nope") is None


def test_a_missing_or_short_credential_names_its_field(tmp_path: Path) -> None:
    cfg = parse_site_config(site_dict(tmp_path))
    with pytest.raises(ConfigError) as err:
        AgentServices.build(cfg, {"VERBUND_SITE_AP_KEY": "short"})
    paths = [p for p, _ in err.value.problems]
    assert paths == ["access_points[0:ap].key_env", "operators[0:op-west].key_env"]
