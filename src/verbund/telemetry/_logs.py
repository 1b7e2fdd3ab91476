"""Structured (JSON) logs: one access-log line per request, and application logs.

Neither ever contains prompt or completion text nor an API key: the access log is built
only from the usage record (ids, names, numbers), and application log calls only ever
pass ids and exception class names. The OpenAI ``user`` field appears only as a keyed
hash (HMAC-SHA256), so the same user can be followed without being named.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import orjson

from verbund.accounting import UsageRecord

access_log = logging.getLogger("verbund.access")

_RECORD_FIELDS = (
    "request_id",
    "access_point",
    "institution_id",
    "key_id",
    "endpoint",
    "model",
    "site",
    "backend",
    "status",
    "http_status",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "stream",
    "priority",
    "attempts",
    "user_hash",
)
_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                out[k] = v
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__  # the type only: no values
        return orjson.dumps(out, default=str).decode()


def log_access(rec: UsageRecord) -> None:
    if access_log.isEnabledFor(logging.INFO):
        fields = {
            k: getattr(rec, k) for k in _RECORD_FIELDS if getattr(rec, k, None) not in (None, "")
        }
        access_log.info("request", extra=fields)


class Pseudonymizer:
    """Keyed hashes of end-user ids. The key comes from the environment (the same on every
    access point, so pseudonyms match across them) or, failing that, from a file in the
    state directory created on first use."""

    def __init__(self, env_var: str, state_dir: Path) -> None:
        secret = os.environ.get(env_var, "")
        if not secret:
            path = state_dir / "pseudonym.key"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_hex(32))
            secret = path.read_text().strip()
        self._key = secret.encode()

    def __call__(self, user: str) -> str:
        return "u_" + hmac.new(self._key, user.encode(), hashlib.sha256).hexdigest()[:20]
