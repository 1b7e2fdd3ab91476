"""The admin routes that exchange checkpoints: sign on demand, keep partners' checkpoints
that verify, refuse forged ones, and check the chain against them."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import GatewayFactory, federation_dict
from tests.trust.chain import partner, truncate
from verbund.config import parse_config
from verbund.trust import sign_checkpoint

SITE = partner("rz-west")


async def test_checkpoints_are_signed_exchanged_and_checked(
    gateway_factory: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = Ed25519PrivateKey.generate()
    seed = own.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    monkeypatch.setenv("VERBUND_SIGNING_KEY", base64.b64encode(seed).decode())
    data = federation_dict(tmp_path)
    data["trust"] = {"checkpoint_interval": 0, "partners": {"rz-west": SITE.public_b64}}
    async with gateway_factory(parse_config(data)) as gw:
        admin = gw.admin()
        r = await gw.client.post("/admin/audit/checkpoints", json={"sign": True}, headers=admin)
        assert r.status_code == 200, r.text
        signed = r.json()["signed"]
        assert signed["signer"] == "ap-test" and signed["index"] >= 1
        _, hashes = await gw.services.audit.linked_hashes()
        site_cp = sign_checkpoint(SITE, "federation", len(hashes), hashes[-1], time.time())
        r = await gw.client.post(
            "/admin/audit/checkpoints", json={"checkpoints": [site_cp.to_json()]}, headers=admin
        )
        assert r.json()["received"] == 1
        forged = {**site_cp.to_json(), "hash": "0" * 64}
        r = await gw.client.post(
            "/admin/audit/checkpoints", json={"checkpoints": [forged]}, headers=admin
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "signature"
        listed = (await gw.client.get("/admin/audit/checkpoints", headers=admin)).json()
        assert {c["signer"] for c in listed["data"]} == {"ap-test", "rz-west"}
        assert set(listed["public_keys"]) == {"ap-test", "rz-west"}
        ok = (await gw.client.get("/admin/audit/checkpoints/verify", headers=admin)).json()
        assert ok["ok"] and ok["checkpoints_checked"] == 2
        member = await gw.client.get("/admin/audit/checkpoints", headers=gw.auth())
        assert member.status_code in (401, 403)
        await truncate(gw.services.store, len(hashes) - 1)
        bad = (await gw.client.get("/admin/audit/checkpoints/verify", headers=admin)).json()
        assert (bad["ok"], bad["problem"], bad["first_disagreeing"]) == (
            False,
            "truncated",
            len(hashes),
        )
        refused = await gw.client.post(
            "/admin/audit/checkpoints", json={"sign": True}, headers=admin
        )
        assert refused.status_code == 409
