"""Free TCP ports for servers started by tests and benchmarks."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's choice; racy only in theory)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
