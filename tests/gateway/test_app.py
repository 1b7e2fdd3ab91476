"""The app's own middleware: request ids."""

from __future__ import annotations

import uuid

from verbund.gateway._app import random_uuid


def test_request_ids_are_random_version_4_uuids() -> None:
    ids = {random_uuid() for _ in range(2000)}
    assert len(ids) == 2000
    for text in list(ids)[:500]:
        u = uuid.UUID(text)
        assert u.version == 4 and u.variant == uuid.RFC_4122
        assert str(u) == text  # the canonical form llama-cpp-python accepts
