"""ID tokens that must be refused, checked against the real provider's published keys:
forged, expired, for another audience or from another issuer, unsigned or signed with
the client secret, and a real token presented with another sign-in's nonce. Then key
rotation: the provider signs with a new key and sign-in goes on."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from tests.identity.conftest import People
from verbund.demo_idp import new_signing_key
from verbund.errors import SignInFailed
from verbund.identity import OidcClient

pytestmark = pytest.mark.real

NONCE = "n-0123456789"


def claims(people: People, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": people.idp.issuer,
        "aud": people.idp.client_id,
        "sub": "someone",
        "iat": now,
        "exp": now + 300,
        "nonce": NONCE,
        "schac_home_organization": "uni-a.example",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(people: People, body: dict[str, Any], jwk: dict[str, Any] | None = None) -> str:
    """Signed like the provider (its own private key and key id) unless ``jwk`` is given."""
    key = jwk or people.idp.signing_key
    header = {"alg": "RS256", "kid": key["kid"]}
    return jwt.encode(header, body, RSAKey.import_key(key))


def client(people: People) -> OidcClient:
    return people.services.identity.provider("demo")


async def test_a_token_signed_by_the_provider_passes(people: People) -> None:
    """The control: what the other tests change is all that makes them fail."""
    got = await client(people).verify_id_token(signed(people, claims(people)), NONCE)
    assert got["sub"] == "someone"


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},  # expired
        {"aud": "another-client"},  # wrong audience
        {"aud": ["another-client", "verbund"]},  # several audiences, no azp for us
        {"iss": "https://evil.example"},  # wrong issuer
        {"nonce": "another-nonce"},  # another sign-in's nonce
        {"nonce": None},  # no nonce
        {"exp": None},  # no expiry
        {"iat": int(time.time()) + 3600},  # issued in the future
    ],
)
async def test_claims_that_must_fail(people: People, changes: dict[str, Any]) -> None:
    token = signed(people, claims(people, **changes))
    with pytest.raises(SignInFailed):
        await client(people).verify_id_token(token, NONCE)


async def test_forged_signature(people: People) -> None:
    impostor = new_signing_key()
    impostor["kid"] = people.idp.signing_key["kid"]  # claims to be the provider's key
    with pytest.raises(SignInFailed):
        await client(people).verify_id_token(signed(people, claims(people), impostor), NONCE)
    unknown = new_signing_key()  # a key id the provider never published
    with pytest.raises(SignInFailed):
        await client(people).verify_id_token(signed(people, claims(people), unknown), NONCE)
    good = signed(people, claims(people))
    head, _, sig = good.split(".")
    tampered = signed(people, claims(people, sub="admin")).split(".")[1]
    with pytest.raises(SignInFailed):
        await client(people).verify_id_token(f"{head}.{tampered}.{sig}", NONCE)


async def test_unsigned_and_hmac_tokens(people: People) -> None:
    secret = OctKey.import_key(people.idp.client_secret.encode())
    hs = jwt.encode({"alg": "HS256"}, claims(people), secret)
    with pytest.raises(SignInFailed):
        await client(people).verify_id_token(hs, NONCE)
    head, body, _ = signed(people, claims(people)).split(".")
    import base64

    none_head = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    for token in (f"{none_head}.{body}.", "not-a-jwt", f"{head}.{body}"):
        with pytest.raises(SignInFailed):
            await client(people).verify_id_token(token, NONCE)


async def test_real_token_with_another_sign_ins_nonce(people: People) -> None:
    """A token the provider really issued, replayed into another sign-in, is refused."""
    callback = await people.authorize("ada")
    query = parse_qs(urlsplit(callback).query)
    sessions = people.services.identity.sessions
    flow = await sessions.take_login(query["state"][0])
    assert flow is not None
    oidc = client(people)
    token = await oidc.exchange(
        query["code"][0], "http://127.0.0.1:9/auth/callback", flow.code_verifier
    )
    assert (await oidc.verify_id_token(token, flow.nonce))["nonce"] == flow.nonce
    _, other = await sessions.begin_login("demo", "/")
    with pytest.raises(SignInFailed):
        await oidc.verify_id_token(token, other.nonce)


async def test_key_rotation(people: People) -> None:
    await people.sign_in("ada")
    old_kid = people.idp.signing_key["kid"]
    fetched = client(people)._keys_fetched
    new = people.idp.rotate_keys()
    assert new["kid"] != old_kid
    done = await people.sign_in("linus")  # signed with the new key: fetched again
    assert done.status_code == 303
    assert client(people)._keys_fetched == fetched + 1
    me = (await people.client.get("/auth/session")).json()
    assert me["institution"] == "uni-b"
