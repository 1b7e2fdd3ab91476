"""Partners' Ed25519 keys: the private key that signs, the public keys that check.

A private key lives outside the store and outside the config file: in a file the config
names (PEM, PKCS#8, as ``verbund trust keygen`` writes it) or in an environment variable
(the raw 32-byte seed, base64). Public keys are the raw 32 bytes, base64, because they
are copied between partners by hand and into configs.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from verbund.errors import ConfigError

__all__ = ["PartnerKeys", "SigningKey", "generate_key_file", "public_key_b64"]


def public_key_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


class SigningKey:
    """One partner's private key and the name it signs under."""

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        self.name = name
        self._key = key

    @classmethod
    def load(
        cls,
        name: str,
        *,
        file: str = "",
        env: str = "",
        environ: Mapping[str, str] | None = None,
    ) -> SigningKey | None:
        """From the file if named, else from the variable if set (in ``environ``, the
        process's environment by default); None if neither."""
        if file:
            try:
                key = serialization.load_pem_private_key(Path(file).read_bytes(), None)
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    [("trust.signing_key_file", f"{file}: {type(exc).__name__}")]
                ) from None
            if not isinstance(key, Ed25519PrivateKey):
                raise ConfigError([("trust.signing_key_file", f"{file}: not an Ed25519 key")])
            return cls(name, key)
        seed = (os.environ if environ is None else environ).get(env, "") if env else ""
        if not seed:
            return None
        try:
            return cls(name, Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed)))
        except (ValueError, binascii.Error):
            raise ConfigError([("trust.signing_key_env", f"${env}: not a base64 seed")]) from None

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._key.sign(message)).decode()

    @property
    def public_b64(self) -> str:
        return public_key_b64(self._key.public_key())


def generate_key_file(path: Path) -> str:
    """Write a new private key (mode 0600) and return its public key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_key_b64(key.public_key())


def _public(b64: str) -> Ed25519PublicKey:
    """Raises ValueError for anything that is not a base64 Ed25519 public key."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(b64, validate=True))
    except (ValueError, binascii.Error):
        raise ValueError("not a base64 Ed25519 key") from None


class PartnerKeys:
    """The public keys a verifier trusts, by partner name: the configured ones
    (``[trust.partners]``) and those site agents announce in their catalogues
    (:meth:`announce`), which never replace a configured one."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for name, b64 in keys.items():
            try:
                self._keys[name] = _public(b64)
            except ValueError:
                raise ConfigError(
                    [(f"trust.partners.{name}", "not a base64 Ed25519 key")]
                ) from None
        self._configured = frozenset(self._keys)

    def announce(self, name: str, b64: str) -> str:
        """Take a key a site's agent announces, if it may be taken; says what became of
        it: ``configured`` (the same key is configured), ``announced`` (no key is
        configured for the site: the announced one counts), or why it was refused. A
        configured key always wins: an announcement never replaces it. An announced key
        replaces an earlier announced one (the site rotated its key); an empty
        announcement withdraws it (``none``). Only ``configured`` and ``announced`` mean
        the site signs with a key this verifier takes."""
        if name in self._configured:
            if not b64:
                return "none"
            if b64 == public_key_b64(self._keys[name]):
                return "configured"
            return "refused: it differs from the key configured in [trust.partners]"
        if not b64:
            self._keys.pop(name, None)
            return "none"
        try:
            self._keys[name] = _public(b64)
        except ValueError as exc:
            self._keys.pop(name, None)
            return f"refused: {exc}"
        return "announced"

    def configured(self, name: str) -> bool:
        return name in self._configured

    def names(self) -> list[str]:
        return sorted(self._keys)

    def known(self, name: str) -> bool:
        return name in self._keys

    def verify(self, name: str, message: bytes, signature_b64: str) -> bool:
        key = self._keys.get(name)
        if key is None:
            return False
        try:
            key.verify(base64.b64decode(signature_b64), message)
        except (InvalidSignature, ValueError, binascii.Error):
            return False
        return True

    def as_b64(self) -> dict[str, str]:
        return {n: public_key_b64(k) for n, k in sorted(self._keys.items())}
