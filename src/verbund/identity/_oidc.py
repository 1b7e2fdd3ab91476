"""One OpenID Connect provider, as a relying party sees it.

Authlib does the OAuth 2.0 side (authorization URL with PKCE, the code exchange with
client authentication); joserfc, Authlib's JOSE library, verifies the ID token: its
signature against the provider's published keys, and issuer, audience, expiry and nonce
as registered claims. Nothing here parses or checks a JWT by hand.

Keys rotate: the JWKS is fetched on first use and fetched again whenever a token names
a key id that is not in it (coalesced, so a burst of sign-ins fetches once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlencode

import httpx2
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2 import OAuth2Error
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from verbund.config import OidcProviderConfig
from verbund.errors import SignInFailed, UpstreamError

__all__ = ["ID_TOKEN_ALGORITHMS", "OidcClient"]

log = logging.getLogger("verbund.identity")

# asymmetric algorithms only: "none" and the HMAC family (keyed with the client secret)
# are never accepted
ID_TOKEN_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
LEEWAY_SECONDS = 60
DISCOVERY_TTL = 3600.0


def _unavailable(message: str) -> UpstreamError:
    return UpstreamError(message, code="identity_provider_unavailable")


class OidcClient:
    def __init__(
        self,
        config: OidcProviderConfig,
        client_secret: str | None,
    ) -> None:
        self.config = config
        self._http = AsyncOAuth2Client(
            client_id=config.client_id,
            client_secret=client_secret,
            token_endpoint_auth_method="client_secret_basic" if client_secret else "none",
            scope=" ".join(config.scopes),
            code_challenge_method="S256",
            timeout=10.0,
        )
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_fetched = 0  # incremented by every fetch; coalesces concurrent ones
        self._keys_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.request(
                "GET", url, headers={"accept": "application/json"}, withhold_token=True
            )
            response.raise_for_status()
            data = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            log.warning("identity provider %s: %s failed: %s", self.name, url, exc)
            raise _unavailable(
                "The identity provider cannot be reached; try again shortly."
            ) from None
        if not isinstance(data, dict):
            raise _unavailable("The identity provider sent an unexpected answer.")
        return data

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document; its issuer must be the configured one."""
        if self._metadata is None or time.monotonic() - self._metadata_at > DISCOVERY_TTL:
            url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            data = await self._get_json(url)
            if data.get("issuer") != self.config.issuer:
                log.warning(
                    "identity provider %s: discovery names issuer %r, configured %r",
                    self.name,
                    data.get("issuer"),
                    self.config.issuer,
                )
                raise _unavailable("The identity provider's discovery document is wrong.")
            self._metadata, self._metadata_at = data, time.monotonic()
        return self._metadata

    async def authorization_url(
        self, redirect_uri: str, state: str, nonce: str, code_verifier: str, prompt: str = ""
    ) -> str:
        """Where the browser signs in; ``prompt="login"`` asks the provider to
        authenticate again (switching accounts) even if it has a session."""
        meta = await self.metadata()
        extra = {"prompt": prompt} if prompt else {}
        url, _ = self._http.create_authorization_url(
            meta["authorization_endpoint"],
            state=state,
            code_verifier=code_verifier,
            nonce=nonce,
            redirect_uri=redirect_uri,
            **extra,
        )
        return str(url)

    async def exchange(self, code: str, redirect_uri: str, code_verifier: str) -> str:
        """The ID token the provider gives for ``code`` (not yet verified)."""
        meta = await self.metadata()
        try:
            token = await self._http.fetch_token(
                meta["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                code_verifier=code_verifier,
                redirect_uri=redirect_uri,
            )
        except (OAuth2Error, httpx2.HTTPError, ValueError) as exc:
            log.info("identity provider %s: code exchange failed: %s", self.name, exc)
            raise SignInFailed("The sign-in could not be completed; please start again.") from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SignInFailed("The identity provider sent no ID token.")
        return id_token

    async def _key_set(self, kid: str | None) -> KeySet:
        """The provider's keys, fetched again when ``kid`` is not among them (rotation)."""
        seen = self._keys_fetched
        keys = self._keys
        if keys is not None and (kid is None or _has_kid(keys, kid)):
            return keys
        async with self._keys_lock:
            if self._keys_fetched == seen:  # nobody fetched while this one waited
                meta = await self.metadata()
                data = await self._get_json(meta["jwks_uri"])
                try:
                    self._keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
                except (JoseError, ValueError, KeyError, TypeError):
                    raise _unavailable("The identity provider published unusable keys.") from None
                self._keys_fetched += 1
            assert self._keys is not None
            return self._keys

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The token's claims, once its signature, ``iss``, ``aud``, ``exp``, ``iat`` and
        ``nonce`` are verified; :class:`SignInFailed` otherwise."""
        meta = await self.metadata()
        offered = meta.get("id_token_signing_alg_values_supported") or ["RS256"]
        algorithms = [a for a in ID_TOKEN_ALGORITHMS if a in offered]
        try:
            kid = jws.extract_compact(id_token.encode()).protected.get("kid")
            keys = await self._key_set(kid if isinstance(kid, str) else None)
            token = jwt.decode(id_token, keys, algorithms=algorithms)
            jwt.JWTClaimsRegistry(
                leeway=LEEWAY_SECONDS,
                iss={"essential": True, "value": self.config.issuer},
                aud={"essential": True, "value": self.config.client_id},
                sub={"essential": True},
                exp={"essential": True},
                iat={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            log.info("identity provider %s: ID token refused: %s", self.name, exc)
            raise SignInFailed("The identity provider's answer could not be verified.") from None
        claims = dict(token.claims)
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.config.client_id:
            raise SignInFailed("The ID token was issued to another party.")
        return claims

    async def end_session_url(self, post_logout_redirect_uri: str) -> str | None:
        """RP-initiated logout at the provider, where it offers it."""
        meta = await self.metadata()
        endpoint = meta.get("end_session_endpoint")
        if not isinstance(endpoint, str):
            return None
        query = urlencode(
            {
                "client_id": self.config.client_id,
                "post_logout_redirect_uri": post_logout_redirect_uri,
            }
        )
        return f"{endpoint}?{query}"


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in keys.keys)
