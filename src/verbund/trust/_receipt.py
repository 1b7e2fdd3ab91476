"""Processing receipts: a site's signed statement that it served one request.

The receipt names the request id, the site, its jurisdiction, the request's data class,
the model, the token counts and the time, and carries no prompt or completion text. It
travels as one header value (``X-Verbund-Receipt``): base64url of canonical JSON with
the signature inside. Anyone with the site's public key checks it offline
(``verbund receipt verify``); changing any field breaks the signature, and another
site's key does not verify it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import orjson

from verbund.trust._keys import PartnerKeys, SigningKey

__all__ = ["Receipt", "sign_receipt"]

_DOMAIN = "verbund-receipt-v1"


@dataclass(frozen=True, slots=True)
class Receipt:
    request_id: str
    site: str
    jurisdiction: str
    data_class: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    ts: float
    signature: str = ""

    def message(self) -> bytes:
        body = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "signature"}
        return orjson.dumps([_DOMAIN, body], option=orjson.OPT_SORT_KEYS)

    def valid(self, keys: PartnerKeys) -> bool:
        """Signed by the site the receipt names, with the key the verifier trusts."""
        return keys.verify(self.site, self.message(), self.signature)

    def encode(self) -> str:
        raw = orjson.dumps(asdict(self), option=orjson.OPT_SORT_KEYS)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Receipt:
        """Raises ValueError for anything that is not a receipt."""
        try:
            raw = base64.urlsafe_b64decode(value.strip() + "=" * (-len(value.strip()) % 4))
            data: Any = orjson.loads(raw)
            return cls(
                request_id=str(data["request_id"]),
                site=str(data["site"]),
                jurisdiction=str(data["jurisdiction"]),
                data_class=str(data["data_class"]),
                model=str(data["model"]),
                prompt_tokens=int(data["prompt_tokens"]),
                completion_tokens=int(data["completion_tokens"]),
                ts=float(data["ts"]),
                signature=str(data["signature"]),
            )
        except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a receipt: {type(exc).__name__}") from None


def sign_receipt(key: SigningKey, receipt: Receipt) -> Receipt:
    """The receipt signed by ``key``, whose name must be the receipt's site."""
    if key.name != receipt.site:
        raise ValueError(f"{key.name} cannot sign a receipt for site {receipt.site}")
    unsigned = replace(receipt, signature="")
    return replace(unsigned, signature=key.sign(unsigned.message()))
