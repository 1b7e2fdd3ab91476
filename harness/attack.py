"""Abusive clients, for the fairness test and the overhead benchmark's "under attack" run.

Each runs in a thread until ``stop`` is set, against an access point at ``address``
(host, port), and uses sockets (or httpx) directly so that it can be as rude as it likes:
headers a line a second, bodies a byte at a time, streams never read, quotas ignored.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable

import httpx

Address = tuple[str, int]


def _request_head(path: str, key: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: attack\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def slow_headers(address: Address, stop: threading.Event) -> None:
    """Slowloris: a request head that never ends, a header line a second."""
    with (
        contextlib.closing(socket.create_connection(address, 10)) as s,
        contextlib.suppress(OSError),
    ):
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: attack\r\n")
        while not stop.wait(1.0):
            s.sendall(b"X-Slow: 1\r\n")


def slow_body(address: Address, key: str, model: str, stop: threading.Event) -> None:
    """A valid head, then the body a byte every half second."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "x" * 4000}]})
    with (
        contextlib.closing(socket.create_connection(address, 10)) as s,
        contextlib.suppress(OSError),
    ):
        s.sendall(_request_head("/v1/chat/completions", key, len(body)))
        for ch in body.encode():
            if stop.wait(0.5):
                return
            s.sendall(bytes([ch]))


def unread_stream(address: Address, key: str, model: str, stop: threading.Event) -> None:
    """A long streamed answer that is never read."""
    body = json.dumps(
        {
            "model": model,
            "stream": True,
            "max_tokens": 4000,
            "messages": [{"role": "user", "content": "Hallo"}],
        }
    )
    with (
        contextlib.closing(socket.create_connection(address, 10)) as s,
        contextlib.suppress(OSError),
    ):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(_request_head("/v1/chat/completions", key, len(body)) + body.encode())
        stop.wait(60)


def greedy(
    address: Address, key: str, model: str, stop: threading.Event, statuses: list[int]
) -> None:
    """Requests back to back with an absurd ``max_tokens``; the statuses it got."""
    base = f"http://{address[0]}:{address[1]}"
    with httpx.Client(base_url=base, trust_env=False, timeout=30) as client:
        while not stop.is_set():
            try:
                r = client.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {key}"},
                    json={
                        "model": model,
                        "max_tokens": 2**62,
                        "messages": [{"role": "user", "content": "x"}],
                    },
                )
                statuses.append(r.status_code)
            except httpx.HTTPError:
                statuses.append(0)
            stop.wait(0.05)


class Attack:
    """``each`` clients of every slow kind plus one greedy client, started and stopped
    together (``with Attack(...):``)."""

    def __init__(self, address: Address, key: str, model: str, each: int) -> None:
        self.stop_event = threading.Event()
        self.statuses: list[int] = []
        kinds: list[Callable[[], None]] = [
            *(lambda: slow_headers(address, self.stop_event) for _ in range(each)),
            *(lambda: slow_body(address, key, model, self.stop_event) for _ in range(each)),
            *(lambda: unread_stream(address, key, model, self.stop_event) for _ in range(each)),
            lambda: greedy(address, key, model, self.stop_event, self.statuses),
        ]
        self.threads = [threading.Thread(target=k, daemon=True) for k in kinds]

    def __enter__(self) -> Attack:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
