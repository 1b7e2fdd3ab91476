"""The sign-in's pure rules: where a login may return to, when cookies are Secure, and
what the ``[auth]`` config accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.requests import Request

from tests.conftest import federation_dict
from verbund.config import parse_config
from verbund.errors import ConfigError
from verbund.gateway._signin import DEFAULT_RETURN, cookie_secure, safe_return


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "https://evil.example/console",
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "console",
        "/ok\r\nSet-Cookie: x=1",
        "/tab\there",
        "/" + "a" * 600,
    ],
)
def test_return_url_must_be_a_path_here(value: str | None) -> None:
    assert safe_return(value) == DEFAULT_RETURN


@pytest.mark.parametrize("value", ["/console", "/console/keys?x=1#top", "/status"])
def test_paths_here_are_kept(value: str) -> None:
    assert safe_return(value) == value


def _request(host: str, scheme: str = "http") -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": scheme,
            "path": "/auth/callback",
            "query_string": b"",
            "headers": [(b"host", host.encode())],
            "server": (host, 80),
        }
    )


class _Svc:
    def __init__(self, tmp: Path, **auth: object) -> None:
        self.config = parse_config(federation_dict(tmp, auth=auth))


@pytest.mark.parametrize(
    ("host", "scheme", "auth", "secure"),
    [
        ("127.0.0.1:8080", "http", {}, False),  # the demo on one machine
        ("localhost:8080", "http", {}, False),
        ("ap.uni-a.de", "http", {}, True),  # behind a TLS proxy: still Secure
        ("ap.uni-a.de", "https", {}, True),
        ("127.0.0.1:8080", "http", {"cookie_secure": "always"}, True),
        ("127.0.0.1:8080", "http", {"public_url": "https://ki.example.de"}, True),
    ],
)
def test_secure_cookies(
    tmp_path: Path, host: str, scheme: str, auth: dict[str, object], secure: bool
) -> None:
    svc = _Svc(tmp_path, **auth)
    assert cookie_secure(_request(host, scheme), svc) is secure  # type: ignore[arg-type]


def test_auth_config(tmp_path: Path) -> None:
    one = {"issuer": "https://idp.example", "client_id": "verbund"}
    cfg = parse_config(federation_dict(tmp_path, auth={"oidc": one}))  # a table or a list
    assert cfg.auth.oidc[0].institution_claim == "schac_home_organization"
    bad_role = {**one, "roles": {"urn:x": "king"}}
    with pytest.raises(ConfigError, match=r"auth\.oidc"):
        parse_config(federation_dict(tmp_path, auth={"oidc": bad_role}))
    unknown_site = {**one, "roles": {"urn:x": "site_operator:mars"}}
    with pytest.raises(ConfigError, match="unknown site"):
        parse_config(federation_dict(tmp_path, auth={"oidc": unknown_site}))
    with pytest.raises(ConfigError, match="duplicate"):
        parse_config(federation_dict(tmp_path, auth={"oidc": [one, one]}))
    with pytest.raises(ConfigError, match="issuer"):
        parse_config(federation_dict(tmp_path, auth={"oidc": {**one, "issuer": "idp"}}))


def test_the_operators_guide_example_is_a_valid_config() -> None:
    import re
    import tomllib

    from harness.processes import ROOT

    guide = (ROOT / "docs" / "identity.md").read_text()
    match = re.search(r"```toml\n(.*?)```", guide, re.S)
    assert match is not None
    data = tomllib.loads(match.group(1))
    cfg = parse_config(
        {**data, "sites": [{"name": "rz-west"}], "institutions": [{"id": "uni-a"}, {"id": "uni-b"}]}
    )
    assert cfg.auth.oidc[0].roles  # the entitlements map to roles
