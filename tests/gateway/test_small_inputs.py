"""Small client inputs that used to end in a 500 or pass unchecked: admin query and body
values, file expiry policies and names, and the OpenAI ``user`` field on its way to sites."""

from __future__ import annotations

from typing import Any

import pytest

from tests.batch.helpers import chat_line, start_batch
from tests.conftest import Gateway
from tests.gateway.test_openai_routes import assert_openai_error


@pytest.mark.parametrize("after", ["nan", "inf", "-1", "1e400", "x", "1.5"])
async def test_audit_after_must_be_a_sequence_number(gw: Gateway, after: str) -> None:
    r = await gw.client.get("/admin/audit", params={"after": after}, headers=gw.admin())
    assert assert_openai_error(r, 400)["param"] == "after"


async def test_audit_after_pages(gw: Gateway) -> None:
    r = await gw.client.get("/admin/audit", params={"after": "1"}, headers=gw.admin())
    assert r.status_code == 200
    assert all(e["seq"] > 1 for e in r.json()["data"])


@pytest.mark.parametrize("since", ["nan", "inf", "-inf"])
async def test_usage_times_must_be_finite(gw: Gateway, since: str) -> None:
    r = await gw.client.get("/admin/usage", params={"since": since}, headers=gw.admin())
    assert assert_openai_error(r, 400)["param"] == "since"


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"allowed_sites": 5}, "allowed_sites"),
        ({"allowed_sites": "west"}, "allowed_sites"),
        ({"allowed_sites": [["west"]]}, "allowed_sites"),
        ({"allowed_sites": [{"a": 1}]}, "allowed_sites"),
        ({"partner_site": ["west"]}, "partner_site"),
        ({"partner_site": {"a": 1}}, "partner_site"),
    ],
)
async def test_institution_changes_of_the_wrong_type_are_400(
    gw: Gateway, changes: dict[str, Any], param: str
) -> None:
    r = await gw.client.patch("/admin/institutions/uni-a", json=changes, headers=gw.admin())
    assert assert_openai_error(r, 400)["param"] == param


async def upload(gw: Gateway, filename: str = "in.jsonl", **fields: str) -> Any:
    return await gw.client.post(
        "/v1/files",
        files={"file": (filename, b"{}\n", "application/jsonl")},
        data={"purpose": "batch", **fields},
        headers=gw.auth(),
    )


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"expires_after[anchor]": "created_at"}, "expires_after.seconds"),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"},
            "expires_after.seconds",
        ),
        (
            {"expires_after[anchor]": "created_at", "expires_after[seconds]": "x"},
            "expires_after.seconds",
        ),
        ({"expires_after[seconds]": "3600"}, "expires_after.anchor"),
        (
            {"expires_after[anchor]": "now", "expires_after[seconds]": "3600"},
            "expires_after.anchor",
        ),
    ],
)
async def test_an_incomplete_expiry_policy_is_400(
    gw: Gateway, fields: dict[str, str], param: str
) -> None:
    r = await upload(gw, **fields)
    assert assert_openai_error(r, 400, "invalid_value")["param"] == param
    assert (await gw.client.get("/v1/files", headers=gw.auth())).json()["data"] == []


async def test_a_complete_expiry_policy_is_accepted(gw: Gateway) -> None:
    fields = {"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"}
    assert (await upload(gw, **fields)).status_code == 200


@pytest.mark.parametrize("control", ["\u202e", "\u202d", "\u2066", "\u2067", "\u2068", "\u200f"])
async def test_filenames_with_bidi_controls_are_400(gw: Gateway, control: str) -> None:
    r = await upload(gw, filename=f"rechnung{control}lsonj.exe")
    assert assert_openai_error(r, 400, "invalid_filename")["param"] == "file"


async def test_the_user_field_reaches_sites_only_as_its_pseudonym(gw: Gateway) -> None:
    pseudonym = gw.services.telemetry.pseudonyms("erika.mustermann@uni-a.de")
    for stream in (False, True):
        r = await gw.chat(user="erika.mustermann@uni-a.de", stream=stream)
        assert r.status_code == 200
    await start_batch(
        gw, [chat_line("b", body={**chat_line("b")["body"], "user": "erika.mustermann@uni-a.de"})]
    )
    await gw.services.batch_runner.run_until_idle(20.0)
    sent = [c["body"] for f in gw.fakes.values() for c in f.calls]
    assert len(sent) == 3
    assert all(b["user"] == pseudonym for b in sent)
    assert "mustermann" not in str(sent)
