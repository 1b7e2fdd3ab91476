"""People: OpenID Connect sign-in, sessions, role-scoped admin keys (docs/identity.md)."""

from verbund.identity._admin_keys import ADMIN_KEY_ID_PREFIX, AdminKeyService, CreatedAdminKey
from verbund.identity._claims import Identity, Refusal, map_claims
from verbund.identity._oidc import ID_TOKEN_ALGORITHMS, OidcClient
from verbund.identity._people import PeopleService
from verbund.identity._service import IdentityService
from verbund.identity._sessions import LoginFlow, Session, SessionStore

__all__ = [
    "ADMIN_KEY_ID_PREFIX",
    "ID_TOKEN_ALGORITHMS",
    "AdminKeyService",
    "CreatedAdminKey",
    "Identity",
    "IdentityService",
    "LoginFlow",
    "OidcClient",
    "PeopleService",
    "Refusal",
    "Session",
    "SessionStore",
    "map_claims",
]
