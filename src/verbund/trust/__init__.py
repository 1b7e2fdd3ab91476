"""Trust between partners: signed checkpoints of the audit chain, kept by each other.

Each partner (an access point's operator, a site) signs the chain's head with its own
Ed25519 key; partners keep each other's checkpoints; the chain is then checked against
them (:func:`check_against_checkpoints`), which tells a truncated, a rewritten and a
forked history apart and names the first entry that disagrees.
"""

from verbund.trust._book import CheckpointBook
from verbund.trust._checkpoint import Checkpoint, sign_checkpoint
from verbund.trust._keys import PartnerKeys, SigningKey, generate_key_file, public_key_b64
from verbund.trust._receipt import Receipt, sign_receipt
from verbund.trust._statement import (
    ENGINE,
    Countersigned,
    UsageStatement,
    countersign,
    sign_statement,
)
from verbund.trust._verify import Verdict, check_against_checkpoints

__all__ = [
    "ENGINE",
    "Checkpoint",
    "CheckpointBook",
    "Countersigned",
    "PartnerKeys",
    "Receipt",
    "SigningKey",
    "UsageStatement",
    "Verdict",
    "check_against_checkpoints",
    "countersign",
    "generate_key_file",
    "public_key_b64",
    "sign_checkpoint",
    "sign_receipt",
    "sign_statement",
]
