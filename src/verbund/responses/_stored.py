"""Stored responses: kept only for institutions that opt in, encrypted, for a short time.

The text of a stored response (the Response object and the conversation items that
``previous_response_id`` continues) is sealed with AES-GCM under a key that comes from
the environment (``[responses] key_env``), never from the store; the response id and
the institution are the associated data, so a sealed blob copied to another row or
tenant does not open. Rows expire after ``retention_hours`` and are purged by a
background task; an expired row is never returned, purged or not. Another
institution's id reads exactly like an unknown one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete

from verbund.store import STORE_FAILURES, Store, StoredResponseRow

__all__ = ["ResponseStore", "StoredResponse", "sealing_key"]

_NONCE = 12
log = logging.getLogger("verbund.responses")


def sealing_key(secret: str) -> bytes:
    """A 256-bit key from the configured secret: its base64 form if it is one, else a
    SHA-256 of the text (so a passphrase works too)."""
    try:
        raw = base64.urlsafe_b64decode(secret.encode() + b"=" * (-len(secret) % 4))
    except ValueError:
        raw = b""
    return raw if len(raw) == 32 else hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]
    items: list[dict[str, Any]]  # the conversation so far: inputs and outputs, oldest first


class ResponseStore:
    def __init__(self, store: Store, key_env: str, retention_hours: float) -> None:
        self._store = store
        self.key_env = key_env
        secret = os.environ.get(key_env, "")
        self._aead = AESGCM(sealing_key(secret)) if secret else None
        self._retention = retention_hours * 3600

    @property
    def ready(self) -> bool:
        """Whether a key is configured (without one nothing can be stored)."""
        return self._aead is not None

    def _seal(self, response_id: str, institution_id: str, data: bytes) -> bytes:
        assert self._aead is not None
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, data, _aad(response_id, institution_id))

    def _open(self, row: StoredResponseRow) -> bytes | None:
        if self._aead is None:
            return None
        try:
            return self._aead.decrypt(
                row.sealed[:_NONCE], row.sealed[_NONCE:], _aad(row.id, row.institution_id)
            )
        except InvalidTag:
            return None  # another key, or a blob that is not this row's

    async def save(
        self, institution_id: str, key_id: str, response: dict[str, Any], items: list[Any]
    ) -> None:
        response_id = str(response["id"])
        now = time.time()
        sealed = self._seal(
            response_id, institution_id, orjson.dumps({"response": response, "items": items})
        )
        row = StoredResponseRow(
            id=response_id,
            institution_id=institution_id,
            key_id=key_id,
            status=str(response.get("status", "")),
            created_at=now,
            expires_at=now + self._retention,
            sealed=sealed,
        )
        async with self._store.session() as s, s.begin():
            await s.merge(row)

    async def load(self, response_id: str, institution_id: str) -> StoredResponse | None:
        row = await self._store.owned(StoredResponseRow, response_id, institution_id)
        if row is None or row.expires_at <= time.time():
            return None
        data = self._open(row)
        if data is None:
            return None
        doc = orjson.loads(data)
        return StoredResponse(doc["response"], doc["items"])

    async def delete(self, response_id: str, institution_id: str) -> bool:
        async with self._store.session() as s, s.begin():
            result = await s.execute(
                delete(StoredResponseRow).where(
                    StoredResponseRow.id == response_id,
                    StoredResponseRow.institution_id == institution_id,
                )
            )
        return bool(getattr(result, "rowcount", 0))

    async def purge(self, now: float | None = None) -> int:
        """Delete every expired response; how many went."""
        cutoff = time.time() if now is None else now
        async with self._store.session() as s, s.begin():
            result = await s.execute(
                delete(StoredResponseRow).where(StoredResponseRow.expires_at <= cutoff)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def run_purger(self, interval: float) -> None:
        """Purge expired responses every ``interval`` seconds (a background task)."""
        while True:
            with contextlib.suppress(*STORE_FAILURES):
                gone = await self.purge()
                if gone:
                    log.info("purged %d expired stored responses", gone)
            await asyncio.sleep(interval)


def _aad(response_id: str, institution_id: str) -> bytes:
    return orjson.dumps([response_id, institution_id])
